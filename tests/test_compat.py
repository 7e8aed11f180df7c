"""The private APIs of torch, Optuna and Ray that ``harness.compat`` wraps, exercised against the
installed versions: a failure here names the dependency and version that moved. And the suite
runs on the versions pyproject.toml pins."""
import inspect
import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import optuna
import pytest
import torch
from packaging.requirements import Requirement

from harness import compat


def _moved(dist: str) -> str:
    return f"{dist} {version(dist)}: a private API harness.compat wraps has moved"


def test_the_tracing_state_is_read_and_suspended():
    seen = []

    def f(x):
        seen.append(compat.is_tracing())
        with compat.untraced():
            seen.append(compat.is_tracing())
            y = x * 2  # not recorded
        seen.append(compat.is_tracing())  # the trace goes on after
        return y + 1

    graph = str(torch.jit.trace(f, torch.ones(2), check_trace=False).graph)  # one run of f
    assert seen == [True, False, True], _moved("torch")
    assert "aten::add" in graph and "aten::mul" not in graph, _moved("torch")
    assert not compat.is_tracing()


def test_hypervolume_of_a_hand_computed_front():
    import numpy as np

    # Minimised staircase (1, 3), (2, 2), (3, 1) under (4, 4): 1 + 2 + 3.
    assert compat.hypervolume(np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]), np.array([4.0, 4.0])) == 6.0, _moved("optuna")
    assert compat.hypervolume(np.array([[1.0, 1.0, 1.0]]), np.array([2.0, 3.0, 4.0])) == 6.0, _moved("optuna")


def test_a_genetic_sampler_reads_back_the_generation_it_is_given():
    sampler = optuna.samplers.NSGAIISampler(seed=0, population_size=2)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    key = compat.generation_key(sampler)
    assert isinstance(key, str), _moved("optuna")
    study.add_trial(optuna.trial.create_trial(params={"a": 1}, distributions={
        "a": optuna.distributions.CategoricalDistribution([1, 2])}, values=[1.0, 1.0], system_attrs={key: 0}))
    assert sampler.get_trial_generation(study, study.trials[0]) == 0, _moved("optuna")
    assert compat.generation_key(optuna.samplers.RandomSampler()) is None


@pytest.mark.parametrize("name", ["NSGAIISampler", "NSGAIIISampler"])
def test_genetic_samplers_pickle_as_ray_tune_pickles_its_searcher(name):
    import pickle
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampler = compat.picklable_sampler(name)(seed=0, population_size=4)
    copy = pickle.loads(pickle.dumps(sampler))  # Optuna 5.1 holds a lock that plain pickling refuses
    assert isinstance(copy, getattr(optuna.samplers, name)), _moved("optuna")
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=copy)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=5)
    assert len(study.trials) == 5


def test_optuna_search_trial_map_and_study():
    from ray.tune.search.optuna import OptunaSearch

    def space(trial):
        trial.suggest_categorical("a", [1, 2])

    searcher = OptunaSearch(space=space, metric=["m", "n"], mode=["max", "min"],
                            sampler=optuna.samplers.RandomSampler(seed=0))
    config = searcher.suggest("t0")
    asked = compat.searcher_trial(searcher, "t0")
    assert asked is not None and asked.params == config, _moved("ray")
    assert isinstance(compat.searcher_study(searcher), optuna.Study), _moved("ray")
    assert compat.searcher_study(searcher).trials[0].number == asked.number
    compat.searcher_forget(searcher, "t0")
    assert compat.searcher_trial(searcher, "t0") is None, _moved("ray")


def test_ray_token_setup_is_where_it_was():
    fn = compat._ray_token_setup()
    assert "warn_if_disabled" in inspect.signature(fn).parameters, _moved("ray")


def _pins() -> dict[str, Requirement]:
    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    reqs = [Requirement(re.sub(r"\s*#.*", "", r)) for r in meta["project"]["dependencies"]]
    return {r.name.lower(): r for r in reqs}


@pytest.mark.parametrize("dist", ["torch", "ray", "optuna"])
def test_a_dependency_with_wrapped_private_apis_is_pinned_to_what_the_suite_runs(dist):
    pin = _pins()[dist]
    installed = version(dist).split("+")[0]
    assert pin.specifier.contains(installed), f"{dist} {installed} is outside the pinned {pin.specifier}"
    # A range of one minor release: the one the suite has run (a newer one is admitted only
    # after the suite passes on it and the pin moves).
    lower = next(s.version for s in pin.specifier if s.operator == ">=")
    upper = next(s.version for s in pin.specifier if s.operator == "<")
    major, minor = map(int, lower.split(".")[:2])
    assert upper == f"{major}.{minor + 1}", f"{dist}: pin {pin.specifier} spans more than one minor release"


def test_mlflow_schema_head_is_a_revision_mlflow_writes(tmp_path):
    import sqlite3

    from harness.tracking import Tracker

    head = compat.mlflow_schema_head()
    assert isinstance(head, str) and head, _moved("mlflow")
    Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head, _moved("mlflow")


def test_the_fused_list_copy_copies_each_pair():
    dst, src = [torch.zeros(3), torch.zeros(2, 2)], [torch.arange(3.0), torch.ones(2, 2)]
    try:
        compat.foreach_copy(dst, src)
    except (AttributeError, RuntimeError) as e:
        pytest.fail(f"{_moved('torch')}: torch._foreach_copy_ ({e})")
    assert torch.equal(dst[0], src[0]) and torch.equal(dst[1], src[1])
