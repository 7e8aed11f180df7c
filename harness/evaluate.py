"""``harness evaluate``: re-evaluate a study's saved models with another inferer, or as ensembles.

No retraining: every finished trial logged its final weights (``checkpoint/model.pt``). This
loads them from MLflow, rebuilds each trial's validation data from its configuration and
evaluates with the inferer asked for (default: the trial's own, which reproduces the trial's
Dice) either per trial or, with ``--ensemble seeds``, as one ensemble per variant and fold
(the members' probabilities averaged, MONAI ``MeanEnsemble``). Each evaluation is an MLflow
run (``harness_role = evaluation``) beside the study's trials, costed as run: an ensemble of
k models with 16-view TTA costs 16 k network passes.
"""
from __future__ import annotations

import tempfile
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch

from harness.config import ComponentCfg, ConfigError, TrialSpec, check_train, load_study, with_data_roots
from harness.contract import out_channels
from harness.data import build_task
from harness.inferers import build_inferer
from harness.train import CHECKPOINT, cost_as_run, evaluate, load_model

ENSEMBLES = ("none", "seeds")


def parse_inferer(text: str | None) -> ComponentCfg | None:
    """``tta`` or a YAML mapping such as ``{name: tta, params: {views: mirror}}``."""
    if text is None:
        return None
    import yaml

    try:
        return ComponentCfg.model_validate(yaml.safe_load(text))
    except Exception as e:  # noqa: BLE001  pydantic or YAML: either way the user's text is wrong
        raise ConfigError(f"--inferer: {text!r} is not a name or {{name: ..., params: {{...}}}} ({e})") from None


def run_evaluate(path: str, scale: str, *, inferer: str | None = None, ensemble: str = "none",
                 variants: list[str] | None = None, tracking_uri: str | None = None,
                 data_roots: list[str] | None = None, console=None) -> int:
    """Evaluate the study's finished trials (``variants``: those only) with ``inferer`` (YAML text;
    default the trial's own), per trial or as one ensemble of seeds per variant and fold; each
    evaluation an MLflow run. 1 when a named variant could not be evaluated."""
    from rich.console import Console

    from harness.session import Session, SessionOptions

    console = console or Console()
    if ensemble not in ENSEMBLES:
        raise ConfigError(f"--ensemble: {ensemble!r} is not one of {', '.join(ENSEMBLES)}")
    study = with_data_roots(load_study(path), scale, data_roots or [])
    cfg = parse_inferer(inferer)
    if cfg is not None:  # a bad inferer fails before any model is loaded or run is written
        check_train(study.train.model_copy(update={"inferer": cfg}), "--inferer")
    session = Session(SessionOptions(tracking_uri))
    groups, n = _groups(study, scale, session, ensemble, variants)
    with session:
        console.print(f"{study.name}@{scale}: {len(groups)} evaluation(s) of {n} finished trial(s)")
        rows, skipped, run = [], [], _Evaluation(session.tracker, study, scale, ensemble, inferer=cfg, console=console)
        for i, ((variant, fold, _), members) in enumerate(groups.items(), 1):
            console.print(f"[{i}/{len(groups)}] {variant}" + (f" fold {fold}" if fold is not None else "")
                          + f": {len(members)} model(s), evaluating and costing ...", highlight=False)
            try:
                loaded = _load_members(members, study, path, session.reader)
            except Exception as e:  # noqa: BLE001  a run without weights (older harness, lost artifact, damaged file)
                console.print(f"[yellow]{variant}: skipped, {e}[/yellow]", soft_wrap=True)
                skipped.append(variant)
                continue
            rows.append(_evaluate_group(run, variant, fold, members, loaded))
    _print_rows(rows, f"{study.name}@{scale}: re-evaluated ({ensemble} ensemble)", console)
    named_and_skipped = sorted(set(variants or []) & set(skipped))
    if named_and_skipped:
        console.print(f"[red]--variant {', '.join(named_and_skipped)}: not evaluated (see above)[/red]")
    return 0 if rows and not named_and_skipped else 1


def _groups(study, scale: str, session, ensemble: str, variants: list[str] | None) -> tuple[dict, int]:
    """The finished trials to evaluate, grouped: (variant, fold, run or None for an ensemble) ->
    [(MLflow run, trial row)]; and how many trials the study has finished."""
    from harness.report import load_runs
    from harness.tracking import FOLD

    runs = load_runs(study, scale, session.uri, with_cases=False)
    if runs.trials.empty:
        raise ConfigError(f"{study.name}@{scale}: no finished trial of the study as it stands to evaluate")
    known = list(dict.fromkeys(runs.trials.variant))
    for v in variants or []:
        if v not in known:
            from harness.registry import UnknownNameError

            raise ConfigError(str(UnknownNameError("variant with finished trials", v, known, "--variant")))
    groups: dict[tuple, list[Any]] = defaultdict(list)
    for r in runs.trials.itertuples():
        if variants and r.variant not in variants:
            continue
        run = session.reader.run(r.run_id)
        key = (r.variant, run.data.tags.get(FOLD), r.run_id if ensemble == "none" else None)
        groups[key].append((run, r))
    return groups, len(runs.trials)


def _load_members(members: list, study, path: str, store) -> tuple[list[dict], list]:
    """The members' checkpoints and models; ValueError for a missing, damaged or foreign one."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ckpts = [load_checkpoint(store, run.info.run_id) for run, _ in members]
    foreign = {p for c in ckpts for p in TrialSpec.model_validate_json(c["trial"]).plugins} - set(study.plugins)
    if foreign:  # the checkpoint's list is data: only the study on the command line imports
        raise ValueError(f"it was trained with plugins {sorted(foreign)} that {path} does not name")
    return ckpts, [load_model(c, device) for c in ckpts]


@dataclass(frozen=True)
class _Evaluation:
    """What every evaluation of one ``harness evaluate`` shares: where it is logged, the study at
    its scale, the ensemble asked for, the inferer (None: each trial's own) and the console."""
    tracker: Any
    study: Any
    scale: str
    ensemble: str
    inferer: ComponentCfg | None
    console: Any


def _evaluate_group(e: _Evaluation, variant: str, fold: str | None, members: list, loaded: tuple) -> dict:
    """One evaluation (a trial, or an ensemble of its members) with its cost, logged as an MLflow
    run beside the study's trials; returns its row."""
    from harness.tracking import FOLD, MEMBER_RUNS, PARENT, VARIANT

    (ckpts, models), tracker, study, scale, ensemble, inferer = loaded, e.tracker, e.study, e.scale, e.ensemble, e.inferer
    ckpt = ckpts[0]
    spec = TrialSpec.model_validate_json(ckpt["trial"])
    cfg = spec.train
    if inferer is not None:
        cfg = cfg.model_copy(update={"inferer": inferer})
        check_train(cfg, "--inferer")
    task = build_task(spec.data.dataset, **spec.data.params)
    if out_channels(len(task.regions), cfg.output) != ckpt["out_channels"]:
        raise ConfigError(f"{variant}: the data now has regions {list(task.regions)}, the model predicts "
                          f"{ckpt['out_channels']} channels")
    inf = build_inferer(cfg.inferer, cfg.patch, cfg.batch_size, cfg.output)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = evaluate(models if len(models) > 1 else models[0], task, cfg, device, inf)
    cost = cost_as_run(spec, cfg, task.in_channels, models, train_memory=False)
    per_case = result.pop("per_case")
    members_dice = sum(r.mean_dice for _, r in members) / len(members)
    run_id = tracker.start_evaluation(
        members[0][0].info.experiment_id, members[0][0].data.tags.get(PARENT),
        {VARIANT: variant, "scale": scale, "study": study.name, "inferer": cfg.inferer.model_dump_json(),
         "ensemble": ensemble, MEMBER_RUNS: ",".join(run.info.run_id for run, _ in members),
         "mlflow.runName": f"{variant}:{cfg.inferer.name}" + (f"x{len(models)}" if len(models) > 1 else ""),
         **({FOLD: fold} if fold is not None else {})})
    tracker.finish_child(run_id, {**result, **cost, "members": float(len(models))}, per_case, step=0)
    e.console.print(f"    Dice {result['mean_dice']:.1f} (members {members_dice:.1f}), {cost['gmacs']:.3g} GMACs",
                  highlight=False)
    return {"variant": variant, "fold": fold or "", "members": len(models), "inferer": cfg.inferer.name,
            "mean_dice": result["mean_dice"], "members_mean_dice": members_dice, "gmacs": cost["gmacs"],
            "forward_passes": cost["forward_passes"], "latency_s": cost.get("latency_s", float("nan")), "run": run_id}


def _print_rows(rows: list[dict], title: str, console) -> None:
    from rich.table import Table

    table = Table(title=title)
    for c in ("variant", "fold", "members", "inferer", "mean_dice", "members_mean_dice", "gmacs", "forward_passes",
              "latency_s", "run"):
        table.add_column(c)
    for r in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values()))
    console.print(table)


def load_checkpoint(store, run_id: str) -> dict:
    """The run's checkpoint; ValueError saying the file is missing or damaged (not torch's advice
    to unpickle it unsafely)."""
    with tempfile.TemporaryDirectory() as d:
        try:
            path = store.artifact(run_id, f"checkpoint/{CHECKPOINT}", d)
        except Exception:  # noqa: BLE001  MLflow raises several kinds for a missing artifact
            raise ValueError(f"run {run_id} has no checkpoint/{CHECKPOINT}") from None
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  a truncated zip, garbage bytes, a pickle of other objects
            raise ValueError(f"the checkpoint of run {run_id} is damaged or not a harness checkpoint "
                             f"({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "harness-checkpoint-1":
        raise ValueError(f"the checkpoint of run {run_id} is not a harness checkpoint")
    return ckpt
