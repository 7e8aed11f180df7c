"""Every private API of a dependency the harness relies on, in one place.

Each is wrapped here and nowhere else used directly; ``tests/test_compat.py`` exercises each
against the installed version and fails naming the dependency and its version when one moves.
``pyproject.toml`` pins those dependencies to the versions the suite has run.

- torch: the jit tracing state (``torch._C._get_tracing_state``), read and suspended so that a
  custom autograd op is one node of fvcore's trace (its inner copies are not counted); the
  fused list copy ``torch._foreach_copy_`` (Group Shift's box copies in one dispatch).
- Optuna: the WFG hypervolume (``optuna._hypervolume.compute_hypervolume``), the system
  attribute key in which a genetic sampler keeps a trial's generation
  (``NSGAIISampler._get_generation_key``), and the genetic samplers' lock, which pickling drops
  (``picklable_sampler``).
- MLflow: the newest tracking schema revision (``_get_latest_schema_revision``), against which
  a store is checked before use.
- Ray Tune: ``OptunaSearch``'s map of Ray trial ids to Optuna trials (``_ot_trials``) and its
  study (``_ot_study``); Ray's token-authentication set-up for an explicit cluster address
  (``ray._private.authentication``).

Libraries are imported inside the functions: importing this module costs nothing.
"""
from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
from typing import Any


def foreach_copy(dst: list, src: list) -> None:
    """``dst[i].copy_(src[i])`` for every i, issued as one fused dispatch (``torch._foreach_copy_``)."""
    import torch

    torch._foreach_copy_(dst, src)


def is_tracing() -> bool:
    """Whether a ``torch.jit`` trace (fvcore's counter) is recording now."""
    import torch

    return torch._C._get_tracing_state() is not None


@contextmanager
def untraced():
    """Suspend a running ``torch.jit`` trace: what runs inside is not recorded."""
    import torch

    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        yield
    finally:
        torch._C._set_tracing_state(state)


def hypervolume(loss, reference) -> float:
    """Hypervolume of ``loss`` (n, m), every objective to be minimised, each row better than
    ``reference`` (m,) in every objective (WFG algorithm, While et al. 2012)."""
    from optuna._hypervolume import compute_hypervolume

    return float(compute_hypervolume(loss, reference))


@functools.cache
def picklable_sampler(name: str):
    """Optuna's genetic sampler ``name`` (``NSGAIISampler``, ``NSGAIIISampler``) made picklable:
    Optuna 5.1's ``BaseGASampler`` holds a ``threading.Lock`` and no ``__getstate__``, and Ray
    Tune pickles the search algorithm with its sampler ("cannot pickle '_thread.lock' object").
    Locks leave the state and come back fresh on unpickling, as Optuna's own storages do. The
    class is built on first use and found by pickle through this module's ``__getattr__``."""
    import threading

    import optuna

    lock_type = type(threading.Lock())

    def getstate(self):
        locks = [k for k, v in self.__dict__.items() if isinstance(v, lock_type)]
        return {**{k: v for k, v in self.__dict__.items() if k not in locks}, "_harness_locks": locks}

    def setstate(self, state):
        state = dict(state)
        locks = state.pop("_harness_locks", [])
        self.__dict__.update(state)
        for k in locks:
            setattr(self, k, threading.Lock())

    cls = type(f"Picklable{name}", (getattr(optuna.samplers, name),),
               {"__getstate__": getstate, "__setstate__": setstate, "__module__": __name__})
    return cls


def __getattr__(attr: str):
    if attr.startswith("Picklable") and attr.endswith("Sampler"):
        return picklable_sampler(attr.removeprefix("Picklable"))
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def mlflow_schema_head() -> str:
    """The alembic revision of the newest MLflow tracking schema, as this MLflow writes it
    (``mlflow.store.db.utils._get_latest_schema_revision``)."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def generation_key(sampler) -> str | None:
    """The system-attribute key under which a genetic sampler (NSGA-II/III) keeps a trial's
    generation; None for another sampler."""
    key = getattr(sampler, "_get_generation_key", None)
    return key() if key is not None else None


def searcher_trial(searcher, trial_id: str):
    """The Optuna trial that Ray Tune's ``OptunaSearch`` asked for the Ray trial ``trial_id``
    (None when it holds none)."""
    return searcher._ot_trials.get(trial_id)


def searcher_forget(searcher, trial_id: str) -> None:
    """Drop the Ray trial ``trial_id`` from ``OptunaSearch``'s map (its Optuna trial was told
    another way)."""
    del searcher._ot_trials[trial_id]


def searcher_study(searcher) -> Any:
    """The Optuna study ``OptunaSearch`` asks and tells."""
    return searcher._ot_study


def ray_token_auth(verbose: int) -> None:
    """What ``ray.init(address="auto")`` does and an explicit ``HOST:PORT`` does not (Ray 2.60):
    turn token authentication on when a token is at hand and ``RAY_AUTH_MODE`` is unset, so that
    a head started by ``ray start --head`` accepts the driver. Ray's notice only with ``-v 2``."""
    enable = _ray_token_setup()
    quiet = logging.getLogger("ray._private.authentication")
    level = quiet.level
    if verbose < 2:
        quiet.setLevel(logging.ERROR)
    try:
        enable(warn_if_disabled=False)
    finally:
        quiet.setLevel(level)


def _ray_token_setup():
    from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available

    return maybe_enable_token_auth_if_token_available
