"""``harness run``: validate one or more studies, then train their trials (or size them with --dry-run)."""
from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from torch import nn
from rich.table import Table

from pydantic import ValidationError

from harness.combine import run_combined
from harness.config import (ConfigError, ResourcesCfg, TrialSpec, build_checked_model, combined_keys, config_hash,
                            load_study, resolve, spec_hash, with_data_roots)
from harness.config.checks import missing_package
from harness.data import Task, build_task
from harness.cost import count_macs
from harness.train import build_trial, pick_device, sample_transforms, train_step, trial_model


def random_batch(spec: TrialSpec, task: Task) -> dict[str, torch.Tensor]:
    """A batch of the trial's shape without reading data: noise images, random exclusive labels,
    and the study's derived targets computed from them by its own transforms."""
    cfg = spec.train
    gen = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(cfg.batch_size):
        cls = torch.randint(0, len(task.regions) + 1, (1, *cfg.patch), generator=gen)
        label = torch.cat([cls == r + 1 for r in range(len(task.regions))]).to(torch.uint8).numpy()
        image = torch.randn(task.in_channels, *cfg.patch, generator=gen).numpy()
        samples.append(sample_transforms(cfg, 0)({"image": image, "label": label}))
    return {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in samples[0]}


def measure_step_time(spec: TrialSpec, task: Task, steps: int = 2, device: torch.device | None = None) -> float:
    """Seconds per training step of this trial (built as ``run`` builds it) on this machine, or on
    ``device``. On CUDA the allocator's peak is reset after the warm-up, so
    ``torch.cuda.max_memory_allocated`` then reads the peak of a step (not of cuDNN's search)."""
    t = build_trial(spec, task=task, device=device, loader=False)
    batch = random_batch(spec, task)
    train_step(t, batch)  # warm-up: cuDNN's algorithm search, the allocator's first blocks
    if t.device.type == "cuda":
        torch.cuda.synchronize(t.device)  # the warm-up's queued kernels must not land in the timing
        torch.cuda.reset_peak_memory_stats(t.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(t, batch)
    if t.device.type == "cuda":
        torch.cuda.synchronize(t.device)
    return (time.perf_counter() - t0) / steps


def step_work(specs: list[TrialSpec], tasks: dict[str, Task]) -> dict[str, float]:
    """Forward MACs of one training batch per trial (``trial_id``), estimated (``proxy_macs``)
    without a forward pass at the training patch, which in the driver could exhaust its memory;
    a trial whose MACs cannot be counted gets infinity (its cost measurement will fail the trial
    anyway, early). Once per architecture."""
    macs: dict[str, float] = {}
    out = {}
    for spec in specs:
        cfg = spec.train
        key = config_hash([spec.model.model_dump(), spec.data.model_dump(), cfg.patch, cfg.batch_size, cfg.output])
        if key not in macs:
            try:
                macs[key] = proxy_macs(spec, tasks[config_hash(spec.data.model_dump())])
            except Exception:  # noqa: BLE001  an ordering hint only; the trial itself reports the error
                macs[key] = float("inf")
        out[spec.trial_id] = macs[key]
    return out


def longest_first(specs: list[TrialSpec], work: dict[str, float]) -> list[TrialSpec]:
    """``specs`` ordered by training work (``work``: ``step_work``, x steps), the largest first
    (stable among equals).

    Ray Tune starts trials in the order given; started in study order, a long trial that comes
    last runs alone at the end (the landscape's VFN: 4 of its 13 minutes). Longest first is the
    LPT rule, whose makespan is within 4/3 of the best.
    """
    return sorted(specs, key=lambda s: work[s.trial_id] * s.train.epochs * s.train.steps_per_epoch, reverse=True)


PROXY_SHRINK = (4, 2, 1)  # per axis: 1/64, 1/8 of the patch's voxels, then the patch itself


def shrink_factors(patch: list[int]) -> list[int]:
    """``PROXY_SHRINK``, after larger factors (8 to 64) that keep every axis at 16 or more: a
    patch of 512^3 is measured at 16^3, never at 128^3 in the driver."""
    return [f for f in (64, 32, 16, 8) if min(patch) // f >= 16] + list(PROXY_SHRINK)


def _at_proxy(spec: TrialSpec, task: Task, measure) -> tuple[float, float, nn.Module]:
    """``measure(model, shape)`` at batch 1 on the patch shrunk by the largest factor of
    ``PROXY_SHRINK`` the model accepts (groups and strides must still divide), with the factor
    (voxels x batch) that scales it to a training batch, and the model: never a training-sized
    forward pass in the driver, whose memory it could exhaust."""
    cfg = spec.train
    for f in shrink_factors(cfg.patch):
        if any(p % f for p in cfg.patch):
            continue
        small = [p // f for p in cfg.patch]
        proxy = spec.model_copy(update={"train": cfg.model_copy(update={"patch": small})})
        try:
            # "Initializing zero-element tensors": a size it cannot take; OBELISK's affine_grid on a
            # unit-size grid: the proxy's, not the trial's.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                model = trial_model(proxy, task)
                if f > 1 and any(p.numel() == 0 for p in model.parameters()):
                    continue  # layers sized from the input (a net built for one size) came out empty
                return float(measure(model, [1, task.in_channels, *small])), float(f**3 * cfg.batch_size), model
        except Exception:  # noqa: BLE001  the model refuses this size (groups, strides): try a larger one
            if f == 1:
                raise
    raise ValueError(f"patch {cfg.patch}: no size to measure at")


def proxy_macs(spec: TrialSpec, task: Task) -> float:
    """Forward MACs of a training batch (``_at_proxy``): exact for nets whose every op scales
    with the voxels (convolutions, norms, upsampling), an estimate for the rest (a fully
    connected bottleneck)."""
    macs, scale, _ = _at_proxy(spec, task, lambda model, shape: count_macs(model, shape)["macs"])
    return macs * scale


def _leaf_output_values(model: nn.Module, shape: list[int]) -> int:
    """Values every leaf module outputs in one forward pass at ``shape``."""
    total = [0]

    def hook(_m, _i, out):
        total[0] += sum(t.numel() for t in (out if isinstance(out, (tuple, list)) else [out])
                        if isinstance(t, torch.Tensor))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(shape))
    finally:
        for h in handles:
            h.remove()
    return total[0]


def estimate_train_memory(spec: TrialSpec, task: Task) -> float:
    """Bytes a training step needs, roughly: 16 a parameter (weights, gradients, Adam's two
    moments) and 8 a value every leaf module outputs (kept for the backward, and its gradient),
    counted at ``_at_proxy``'s size and scaled to the training batch. Functional ops (Group
    Shift, concatenations) are not counted: a floor, enough to refuse what cannot fit."""
    values, scale, model = _at_proxy(spec, task, _leaf_output_values)
    return 16.0 * sum(p.numel() for p in model.parameters()) + 8.0 * values * scale


def largest_cpu_trial(specs_of: dict[str, list[TrialSpec]], tasks: dict[str, Task]) -> tuple[str, float] | None:
    """(trial, estimated training bytes) of the hungriest trial that trains on CPUs (a GPU trial's
    activations live on its GPU), or None; a trial whose estimate fails is left to fail itself."""
    best, seen = None, set()
    for spec in (s for specs in specs_of.values() for s in specs if s.resources.gpu == 0):
        cfg = spec.train
        key = config_hash([spec.model.model_dump(), spec.data.model_dump(), cfg.patch, cfg.batch_size, cfg.output])
        if key in seen:
            continue
        seen.add(key)
        try:
            need = estimate_train_memory(spec, tasks[config_hash(spec.data.model_dump())])
        except Exception:  # noqa: BLE001  an estimate only
            continue
        if best is None or need > best[1]:
            best = (f"{spec.study}/{spec.key}", need)
    return best


class PreflightError(ValueError):
    """What failed when the net ran as its trial will, and what to change (one line)."""


def _why(e: BaseException) -> str:
    """An exception in one line; a missing package as the command that installs it."""
    if isinstance(e, ImportError):
        return missing_package(e)
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return f"{type(e).__name__}: {first[:300]}"


def _step(what: str, fn, hint: str = ""):
    try:
        return fn()
    except (ConfigError, PreflightError):
        raise
    except Exception as e:  # noqa: BLE001  whatever the net raises is the user's to read, in one line
        raise PreflightError(f"{what}: {_why(e)}" + (f"; {hint}" if hint else "")) from None


def _pass_sizes(patch: list[int], proxy: list[int]) -> list[list[int]]:
    """``proxy`` (the patch shrunk by f), then the patch shrunk by f/2, f/4, ... above 1."""
    f, out = patch[0] // proxy[0], [list(proxy)]
    while f % 2 == 0 and f > 2:
        f //= 2
        if not any(p % f for p in patch):
            out.append([p // f for p in patch])
    return [s for s in out if s != list(patch)]


def _passes(spec: TrialSpec, task: Task, patch: list[int], out_ch: int, check_loss: bool):
    """The pre-flight's passes at ``patch`` (batch 1): built, an evaluation pass returning the
    segmentation (1, C, *patch), a training pass through the output adapter, the loss on a random
    batch. Returns (the spec at that patch, the model, its training outputs)."""
    from harness.contract import TrainState, as_outputs, main_output
    from harness.losses import build_loss
    from harness.outputs import adapter_names, describe

    cfg = spec.train
    run = spec.model_copy(update={"train": cfg.model_copy(update={"patch": patch, "batch_size": 1})})
    model = _step("building it", lambda: trial_model(run, task))
    x = torch.zeros(1, task.in_channels, *patch)
    fit = "a train.patch its strides divide (and, for a net built for one input size, that size)"
    adapters = f"train.outputs ({', '.join(adapter_names())}; docs/bring_your_own_net.md)"
    want = (1, out_ch, *patch)
    with torch.no_grad():
        seg = _step(f"an evaluation pass at the patch {patch}", lambda: model.eval()(x), f"choose {fit}")
        if not isinstance(seg, torch.Tensor) or tuple(seg.shape) != want:
            raise PreflightError(f"in evaluation it returned {describe(seg)}, the inferers need the segmentation "
                                 f"{want}; choose {adapters}")
        outs = _step(f"a training pass at the patch {patch}", lambda: as_outputs(model.train()(x)),
                     f"choose {adapters}")
        main = main_output(outs)
        if not isinstance(main, torch.Tensor) or main.shape[:2] != (1, out_ch) or (
                list(main.shape[2:]) != list(patch) and "target_at" not in outs):
            raise PreflightError(f"in training its segmentation (first output) is {describe(main)}, not {want}; "
                                 f"choose {adapters}")
        if check_loss:
            loss = build_loss(cfg.loss, cfg.output, cfg.deep_supervision, cfg.aux_losses)
            if not hasattr(loss, "fit"):  # a loss fitted to the training labels needs the data
                batch = random_batch(run, task)
                batch["label"] = batch["label"].float()
                _step("the loss on its training outputs", lambda: loss(outs, batch, TrainState()),
                      f"turn the net's own deep supervision on, or choose {adapters} and train.aux_losses")
    return run, model, outs


_PASSED: dict[str, tuple[float, list[str]]] = {}  # preflight's results in this process, by what decides them


def preflight(spec: TrialSpec, task: Task, check_loss: bool = True) -> tuple[float, list[str]]:
    """``_preflight``, once per process for each configuration that passed it: a search checks
    every option again on each command (a resume, ``--confirm``), and in-process callers (the
    suite, a notebook) run many. A failure is not kept: it is raised again, as the first time."""
    key = spec.model_dump_json(include={"model", "data", "train", "cost"}) + str(check_loss)
    if key not in _PASSED:
        _PASSED[key] = _preflight(spec, task, check_loss)
    macs, notes = _PASSED[key]
    return macs, list(notes)


def _preflight(spec: TrialSpec, task: Task, check_loss: bool = True) -> tuple[float, list[str]]:
    """Run the net as its trial will, once per architecture, before anything trains: built with
    the trial's injected arguments; an evaluation pass at the patch (batch 1, no grad: the
    inferers' window) returning the segmentation (1, C, *patch); a training-mode pass at the
    patch through the output adapter (``train.outputs``) whose outputs the loss reads (deep
    supervision's heads, ``train.aux_losses``), the loss computed on a random batch; an
    evaluation pass at ``cost.input`` when it differs from the patch, for a plugin's net (one
    built for one size fails there); the MACs on ``_at_proxy``'s shrunk patch (an op without a cost handle).
    A built-in family's passes run at that shrunk patch too: its nets are tested at their
    studies' patches, and a paper-sized pass takes minutes on the driver's CPU.

    Returns (MACs of a training batch, notes: outputs the loss will not read); raises
    ``PreflightError`` naming what failed and what to change. Failures of the MAC count other
    than a missing handle are left to the trial (which reports them as its own)."""
    from harness.contract import out_channels
    from harness.cost import UnsupportedOpError
    from harness.outputs import unused_outputs
    from harness.registry import MODELS

    cfg = spec.train
    out_ch = out_channels(len(task.regions), cfg.output)
    try:
        build_checked_model(spec.model, cfg.patch, "", cfg.output, task.in_channels, out_channels=out_ch)
    except ConfigError as e:
        raise PreflightError(str(e)) from None
    sizes: list[list[int]] = []

    def count(model, shape):
        macs = count_macs(model, shape)["macs"]
        sizes.append(shape[2:])  # the size the count ran at
        return macs

    uncosted = None
    try:
        one, scale, _ = _at_proxy(spec, task, count)
        macs = one * scale
    except UnsupportedOpError as e:  # said after the passes, whose faults come first
        macs, uncosted = float("nan"), e
    except Exception:  # noqa: BLE001  not a cost question: the passes below or the trial report it
        macs = float("nan")
    builtin = MODELS.get(spec.model.name).__module__.startswith("harness.")
    # A built-in net runs at the size its MACs were counted at, else the next larger shrink that
    # its training pass takes (batch 1 leaves a norm layer one value per channel at a 1^3
    # bottleneck), up to the patch itself, where a failure is the net's own.
    patches = (_pass_sizes(cfg.patch, sizes[-1]) if builtin and sizes else []) + [cfg.patch]
    for i, patch in enumerate(patches):
        try:
            with warnings.catch_warnings():  # e.g. OBELISK's affine_grid on a unit-size proxy grid
                warnings.simplefilter("ignore", UserWarning)
                run, model, outs = _passes(spec, task, patch, out_ch, check_loss)
            break
        except PreflightError:
            if i + 1 == len(patches):
                raise
    with torch.no_grad():
        notes = [f"its training output {k!r} is not read by the loss: " + (
            "set train.deep_supervision to train its heads" if k == "deep" else
            f"add it with train.aux_losses: {{{k}: WEIGHT}}") for k in
            unused_outputs(model, outs, cfg.deep_supervision, cfg.aux_losses)]
        # The built-in families are tested at their studies' cost inputs; a plugin's net may be
        # built for one size and fail there.
        if spec.cost.input and list(spec.cost.input[2:]) != list(cfg.patch) and not builtin:
            size = list(spec.cost.input[2:])
            _step(f"an evaluation pass at cost.input's {size}",
                  lambda: model.eval()(torch.zeros(1, task.in_channels, *size)),
                  "a net built for one input size is costed at its patch: remove cost.input")
    if uncosted is not None:
        raise PreflightError(f"cannot be costed: {uncosted}")
    return macs, notes


def check_costable(specs: list[TrialSpec], tasks: dict[str, Task], say=print) -> None:
    """``preflight`` once per architecture of ``specs``: a failure is a ConfigError naming the
    variant and the model; outputs the loss will not read are said once (``say``)."""
    seen = set()
    for spec in specs:
        key = config_hash([spec.model.model_dump(), spec.data.model_dump(), spec.train.patch, spec.train.output,
                           spec.train.outputs.model_dump(), spec.train.aux_losses, spec.train.loss.model_dump(),
                           spec.train.deep_supervision and spec.train.deep_supervision.model_dump(),
                           spec.cost.input])
        if key in seen:
            continue
        seen.add(key)
        where = f"{spec.study}: variant {spec.variant!r} (model {spec.model.name!r})"
        try:
            _, notes = preflight(spec, tasks[config_hash(spec.data.model_dump())])
        except PreflightError as e:
            raise ConfigError(f"{where}: {e}") from None
        for note in notes:
            say(f"note: {where}: {note}")


def dry_run(specs: list[TrialSpec], console: Console) -> None:
    tasks: dict[str, Task] = {}
    step_times: dict[str, float] = {}
    table = Table(title=f"{specs[0].study} @ {specs[0].scale}: {len(specs)} trials")
    for col in ("trial", "varying model / params", "steps", "s/step", "est. train time"):
        table.add_column(col)
    total = 0.0
    problems: list[str] = []
    # Show only the model parameters that tell the trials apart.
    keys = list(dict.fromkeys(k for s in specs for k in s.model.params))
    varying = [k for k in keys if len({json.dumps(s.model.params.get(k), sort_keys=True) for s in specs}) > 1]
    for spec in specs:
        dkey = config_hash(spec.data.model_dump())
        if dkey not in tasks:  # lazy: channels and regions only, no case is read
            tasks[dkey] = build_task(spec.data.dataset, **spec.data.params)
        mkey = config_hash([spec.model.model_dump(), spec.train.model_dump(), dkey])
        if mkey not in step_times:
            with console.status(f"measuring a training step of {spec.key} ({len(step_times) + 1} distinct)"):
                try:
                    step_times[mkey] = measure_step_time(spec, tasks[dkey])
                except FloatingPointError as e:  # a recipe that diverges at once: say so, size the rest
                    step_times[mkey] = float("nan")
                    problems.append(f"{spec.key}: {e} in its first steps; as a trial it would be recorded FAILED")
        steps = spec.train.epochs * spec.train.steps_per_epoch
        est = steps * step_times[mkey]
        total += 0.0 if est != est else est
        shown = ([spec.model.name] if len({s.model.name for s in specs}) > 1 else []) + [
            f"{k}={spec.model.params.get(k)}" for k in varying]
        table.add_row(spec.key, ", ".join(shown), str(steps), f"{step_times[mkey]:.3f}",
                      "diverges" if est != est else f"{est / 60:.1f} min")
    console.print(table)
    for p in problems:
        console.print(f"[yellow]{p}[/yellow]", soft_wrap=True)
    device = pick_device(specs[0].resources.gpu)
    unit = "GPU-hours" if device.type == "cuda" else f"hours on this machine's CPU ({torch.get_num_threads()} threads)"
    console.print(f"Total training compute: {total / 3600:.2f} {unit} (measured step time x steps; "
                  f"validation and cost measurement not included).")


@dataclass(frozen=True)
class RunOptions:
    """How ``harness run`` runs its studies (the command line's options).

    seeds / folds: instead of the scale's; address: a Ray cluster; resume: continue the runs
    of this configuration; storage: Ray Tune's trial storage (default: beside the store);
    resources: ``cpu`` / ``gpu`` per trial instead of the study's; data_roots: the study's
    folders instead of its own (one study only); dry: size the trials, train nothing.
    """
    scale: str
    seeds: int | None = None
    folds: int | None = None
    address: str | None = None
    resume: bool = False
    tracking_uri: str | None = None
    storage: str | None = None
    resources: dict[str, float] = field(default_factory=dict)
    data_roots: list[str] = field(default_factory=list)
    dry: bool = False
    verbose: int = 1


def run_studies(paths: list[str], options: RunOptions, console: Console | None = None) -> int:
    """Train the trials of one or more studies, as one Ray Tune run.

    Several studies share the run's fixed cost (imports, Ray's start, the workers' imports) and
    one longest-first order over all their trials, so no study's last trial runs alone while
    cores idle. Each study keeps its own MLflow experiment, parent run, ``--resume`` and report;
    its report's wall time is then the span its trials ran in, among the other studies' (it says
    so). Every study is validated before anything is written.
    """
    console = console or Console()
    if options.data_roots and len(paths) > 1:
        raise ConfigError(f"--data-root: {len(paths)} studies given; a data root belongs to one study's data: "
                          f"run the studies on folders one at a time")
    studies, specs_of = _load_studies(paths, options)
    # Lazy tasks (channels and regions, no case read) for the cost check; data is generated below.
    tasks = {key: build_task(data.dataset, **data.params) for key, data in
             {config_hash(s.data.model_dump()): s.data for specs in specs_of.values() for s in specs}.items()}
    if options.dry:
        for specs in specs_of.values():
            check_costable(specs, tasks, lambda line: print(line, file=sys.stderr, flush=True))
        for _, study in studies:
            dry_run(specs_of[study.name], console)
        return 0
    from harness.progress import Board

    title = ", ".join(st.name for _, st in studies) + f" @ {options.scale}"
    with Board(title, options.verbose) as board:  # shown from here on: the start-up takes tens of seconds
        return _run(Planned(studies, specs_of, tasks), options, console, board)


def _load_studies(paths: list[str], options: RunOptions) -> tuple[list, dict[str, list[TrialSpec]]]:
    """Each study file loaded, on its data roots and resources, and resolved at the scale: every
    config error before anything is written."""
    studies, specs_of = [], {}
    for path in paths:
        study = with_data_roots(load_study(path), options.scale, options.data_roots)
        if options.resources:
            try:
                study = study.model_copy(update={"resources": ResourcesCfg.model_validate(
                    {**study.resources.model_dump(), **options.resources})})
            except ValidationError as e:
                raise ConfigError(f"--cpus-per-trial/--gpus-per-trial: {e.errors()[0]['msg']} "
                                  f"(got {options.resources})") from None
        if study.name in specs_of:
            raise ConfigError(f"study: {path!r} names study {study.name!r} again (given twice?)")
        specs_of[study.name] = resolve(study, options.scale, options.seeds, options.folds)
        studies.append((path, study))
    return studies, specs_of


@dataclass
class Planned:
    """The studies of one ``harness run`` as resolved: (path, study) pairs, each study's trial
    specs, and the tasks they train on (by data hash)."""
    studies: list
    specs_of: dict[str, list[TrialSpec]]
    tasks: dict[str, Task]


def _run(plan: Planned, options: RunOptions, console: Console, board) -> int:
    """``run_studies`` once every study is valid: check, start Ray, train, close the parent runs."""
    from harness.session import Session, SessionOptions  # mlflow and ray load only when a run starts
    from harness.tune import check_capacity

    studies, specs_of, tasks, scale = plan.studies, plan.specs_of, plan.tasks, options.scale
    board.phase(f"checking {len({(s.model.model_dump_json(), str(s.train.patch)) for v in specs_of.values() for s in v})} "
                f"architectures (built, run in both modes at the patch, costed)")
    for specs in specs_of.values():
        check_costable(specs, tasks, board.note)
    # One runner per study and scale: a second `--resume` at once would train every trial left twice.
    session = Session(SessionOptions(options.tracking_uri, verbose=options.verbose, locks=tuple(
        (f"{study.name}@{scale}", f"{study.name}@{scale}") for _, study in studies)))
    board.phase(f"starting Ray ({options.address})" if options.address else "starting a local Ray instance")
    # A trial no node can hold is refused before its data is generated (gigabytes, for a huge patch).
    check_capacity(options.address, max(st.resources.cpu for _, st in studies),
                   max(st.resources.gpu for _, st in studies), options.verbose,
                   largest_cpu_trial(specs_of, tasks))  # before mlflow.db exists
    board.phase("preparing the data (generated on first use, then read from the cache)")
    for task in tasks.values():
        task.train  # generate/cache once, before trials race for it
    with session:
        run = _Run(session, plan, options, console)
        todo = run.open_parents()
        failed = run.train(todo, board)
        return run.close_parents(failed)


class _Run:
    """One ``harness run`` inside its session: the parent runs opened, the trials trained, the
    parents closed with what happened."""

    def __init__(self, session, plan: Planned, options: RunOptions, console: Console):
        self.session, self.plan, self.options, self.console = session, plan, options, console
        self.parents: dict[str, tuple[str, str]] = {}  # study -> (experiment, parent run)
        self.earlier: dict[str, set[str]] = {}  # trial keys finished in earlier runs (more seeds resumed)

    def open_parents(self) -> list[TrialSpec]:
        """Each study's parent run, reopened (``--resume``) or started; returns the trials to run."""
        tracker, scale, studies, todo = self.session.tracker, self.options.scale, self.plan.studies, []
        for path, study in studies:
            specs = self.plan.specs_of[study.name]
            exp_id = tracker.experiment(study.name)
            hashes = {s.key: spec_hash(s) for s in specs}
            study_hash = config_hash(sorted(hashes.items()))
            found = tracker.find_parent(exp_id, scale, study_hash) if self.options.resume else None
            if found is None:
                # Another set of seeds (or folds) than the earlier runs: the trials they finished stay.
                self.earlier[study.name] = (tracker.finished_trials(exp_id, scale, hashes) if self.options.resume
                                            else set())
            tags = {"study_file": str(Path(path)), "paper": study.paper, "title": study.title,
                    **({"run_with": ",".join(st.name for _, st in studies if st is not study)}
                       if len(studies) > 1 else {})}
            parent_id, reopened = self.session.parent(exp_id, study.name, scale, study_hash, tags, found=found)
            # Trained trials only (combined rows are evaluated after them).
            done = reopened & {s.key for s in specs} if reopened is not None else self.earlier[study.name]
            left = [s for s in specs if s.key not in done]
            if reopened is not None:
                self.console.print(f"Resuming {study.name}@{scale}: {len(done)} of {len(specs)} trials finished, "
                                   f"{len(left)} to run.")
            elif self.options.resume:
                self.console.print(f"Resuming {study.name}@{scale}: {len(done)} of {len(specs)} trials finished in "
                                   f"earlier runs, {len(left)} to run." if done else
                                   f"No earlier run of {study.name}@{scale} with this configuration: starting afresh.")
            self.parents[study.name] = (exp_id, parent_id)
            todo += left
        return todo

    def train(self, todo: list[TrialSpec], board) -> list[str]:
        """The trials on Ray Tune, longest first; a Tune crash records its in-flight trials as
        failed and the rest are launched again. Returns the failed trial ids."""
        from harness.tune import run_trials

        trial_hash = {s.trial_id: spec_hash(s) for specs in self.plan.specs_of.values() for s in specs}
        # Ray keeps trial state and checkpoints (the final weights) here; a multi-node cluster needs
        # a path every node shares, or a URI (--storage s3://bucket/ray).
        storage = self.options.storage or self.session.ray_storage
        work = step_work(todo, self.plan.tasks)
        todo = longest_first(todo, work)
        several = len(self.plan.studies) > 1
        for s in todo:
            board.plan(s.trial_id, s.trial_id if several else s.key, s.train.epochs * s.train.steps_per_epoch,
                       s.train.epochs, work[s.trial_id])
        board.phase(f"launching {len(todo)} trials")
        failed: list[str] = []
        while todo:
            writer = run_trials(todo, self.session.tracker, self.parents, trial_hash, self.options.address, storage=storage,
                                board=board, verbose=self.options.verbose)
            failed += writer.failed
            if not writer.crashed:
                break
            # Tune itself raised: its in-flight trials are recorded as failed; go on with the rest.
            settled = set(writer.finished) | set(writer.failed)
            if not settled:
                self.console.print("Ray Tune stopped before any trial started; nothing more is launched.")
                break
            todo = [s for s in todo if s.trial_id not in settled]
            self.console.print(f"Ray Tune stopped early; {len(todo)} trials left to launch.")
        return failed

    def close_parents(self, failed: list[str]) -> int:
        """Combined rows evaluated, then each parent closed with its counts; 1 when a trial is missing."""
        from harness.tracking import TRIAL_KEY

        tracker, scale, code = self.session.tracker, self.options.scale, 0
        for path, study in self.plan.studies:
            specs = self.plan.specs_of[study.name]
            exp_id, parent_id = self.parents[study.name]
            # Combined rows (harness.combine) after their members, in the driver (it writes MLflow).
            _, lost_combined = run_combined(study, specs, tracker, exp_id, parent_id, console=self.console)
            finished = {r.data.tags.get(TRIAL_KEY) for r in tracker.children(exp_id, parent_id)
                        if r.info.status == "FINISHED"} | self.earlier.get(study.name, set())
            keys = [s.key for s in specs] + [c["key"] for c in combined_keys(study, specs)]
            missing = [k for k in keys if k not in finished]
            lost = [s.key for s in specs if s.trial_id in failed] + lost_combined
            tracker.tag(parent_id, "trials_finished", str(len(keys) - len(missing)))
            tracker.tag(parent_id, "trials_failed", ",".join(lost))
            self.session.end(parent_id, "FINISHED" if not missing else ("FAILED" if lost else "KILLED"))
            self.console.print(
                f"{study.name}@{scale}: {len(keys) - len(missing)}/{len(keys)} trials finished"
                + (f"; failed: {', '.join(lost)}" if lost else "")
                + (f"; not run: {', '.join(k for k in missing if k not in lost)} (rerun with --resume)"
                   if set(missing) - set(lost) else "")
                + f". MLflow: {tracker.uri}, parent run {parent_id}. Report: harness report {path} --scale {scale}"
                + (f" --tracking-uri {tracker.uri}" if self.options.tracking_uri else ""), soft_wrap=True)
            code = code or (1 if missing else 0)
        return code
