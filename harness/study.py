"""``harness run``: validate a study, then train its trials (or size them with --dry-run)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from pydantic import ValidationError

from harness.config import ConfigError, ResourcesCfg, TrialSpec, apply_data_roots, config_hash, load_study, resolve
from harness.data import build_task
from harness.losses import build_loss
from harness.models import build_model
from harness.train import make_optimizer, pick_device, train_step


def measure_step_time(spec: TrialSpec, in_channels: int, out_channels: int, steps: int = 2) -> float:
    """Seconds per training step of this trial's model, batch and patch on this machine."""
    device = pick_device(spec.resources.gpu)
    model = build_model(spec.model.name, in_channels=in_channels, out_channels=out_channels,
                        **spec.model.params).to(device)
    cfg = spec.train
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=steps + 1)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda")
    batch = {"image": torch.randn(cfg.batch_size, in_channels, *cfg.patch),
             "label": (torch.rand(cfg.batch_size, out_channels, *cfg.patch) > 0.5).float()}
    loss_fn = build_loss(cfg.loss)
    train_step(model, batch, loss_fn, opt, sched, scaler, device, cfg.amp)  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, batch, loss_fn, opt, sched, scaler, device, cfg.amp)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def dry_run(specs: list[TrialSpec], console: Console) -> None:
    task_shapes: dict[str, tuple[int, int]] = {}
    step_times: dict[str, float] = {}
    table = Table(title=f"{specs[0].study} @ {specs[0].scale}: {len(specs)} trials")
    for col in ("trial", "varying model / params", "steps", "s/step", "est. train time"):
        table.add_column(col)
    total = 0.0
    # Show only the model parameters that tell the trials apart.
    varying = [k for k in specs[0].model.params
               if len({json.dumps(s.model.params.get(k), sort_keys=True) for s in specs}) > 1]
    for spec in specs:
        dkey = config_hash(spec.data.model_dump())
        if dkey not in task_shapes:
            task = build_task(spec.data.dataset, **spec.data.params)
            task_shapes[dkey] = (task.in_channels, len(task.regions))
        mkey = config_hash([spec.model.model_dump(), spec.train.model_dump(), dkey])
        if mkey not in step_times:
            step_times[mkey] = measure_step_time(spec, *task_shapes[dkey])
        steps = spec.train.epochs * spec.train.steps_per_epoch
        est = steps * step_times[mkey]
        total += est
        shown = ([spec.model.name] if len({s.model.name for s in specs}) > 1 else []) + [
            f"{k}={spec.model.params.get(k)}" for k in varying]
        table.add_row(spec.key, ", ".join(shown), str(steps),
                      f"{step_times[mkey]:.3f}", f"{est / 60:.1f} min")
    console.print(table)
    device = pick_device(specs[0].resources.gpu)
    unit = "GPU-hours" if device.type == "cuda" else f"hours on this machine's CPU ({torch.get_num_threads()} threads)"
    console.print(f"Total training compute: {total / 3600:.2f} {unit} (measured step time x steps; "
                  f"validation and cost measurement not included).")


def run_study(path: str, scale: str, seeds: int | None, address: str | None, resume: bool,
              tracking_uri: str | None, dry: bool, verbose: int = 1, console: Console | None = None,
              resources: dict[str, float] | None = None, data_roots: list[str] | None = None,
              folds: int | None = None) -> int:
    console = console or Console()
    study = load_study(path)
    apply_data_roots(study, scale, data_roots or [])
    if resources:
        try:
            study.resources = ResourcesCfg.model_validate({**study.resources.model_dump(), **resources})
        except ValidationError as e:
            raise ConfigError(f"--cpus-per-trial/--gpus-per-trial: {e.errors()[0]['msg']} (got {resources})") from None
    specs = resolve(study, scale, seeds, folds)  # every config error is raised before anything is written
    if dry:
        dry_run(specs, console)
        return 0
    for data in {config_hash(s.data.model_dump()): s.data for s in specs}.values():
        build_task(data.dataset, **data.params).train  # generate/cache once, before trials race for it

    from harness.tracking import Tracker  # mlflow and ray are imported only when a run really starts
    from harness.tune import run_trials

    tracker = Tracker(tracking_uri)
    exp_id = tracker.experiment(study.name)
    study_hash = config_hash([s.model_dump() for s in specs])
    trial_hash = {s.key: config_hash(s.model_dump()) for s in specs}
    todo = specs
    parent = tracker.find_parent(exp_id, scale, study_hash) if resume else None
    if parent is not None:
        parent_id = parent.info.run_id
        done = set()
        for run in tracker.children(exp_id, parent_id):
            if run.info.status == "FINISHED":
                done.add(run.data.tags.get("trial_key"))
            elif run.info.status == "RUNNING":  # its driver was killed: keep it for the record, closed
                tracker.client.set_terminated(run.info.run_id, "KILLED")
        todo = [s for s in specs if s.key not in done]
        tracker.client.update_run(parent_id, status="RUNNING")
        console.print(f"Resuming {study.name}@{scale}: {len(done)} of {len(specs)} trials finished, "
                      f"{len(todo)} to run.")
    else:
        if resume:
            console.print(f"No earlier run of {study.name}@{scale} with this configuration: starting afresh.")
        parent_id = tracker.start_parent(exp_id, study.name, scale, study_hash,
                                         {"study_file": str(Path(path)), "paper": study.paper, "title": study.title})

    failed: list[str] = []
    storage = Path(tracker.uri[len("sqlite:///"):]).parent / "ray_results" if tracker.uri.startswith(
        "sqlite:///") else Path("ray_results")
    while todo:
        writer = run_trials(todo, tracker, exp_id, parent_id, trial_hash, address, storage, verbose)
        failed += writer.failed
        if not writer.crashed:
            break
        # Tune itself raised: its in-flight trials are recorded as failed; go on with the rest.
        settled = set(writer.finished) | set(writer.failed)
        if not settled:
            console.print("Ray Tune stopped before any trial started; nothing more is launched.")
            break
        todo = [s for s in todo if s.key not in settled]
        console.print(f"Ray Tune stopped early; {len(todo)} trials left to launch.")
    finished = {r.data.tags.get("trial_key") for r in tracker.children(exp_id, parent_id)
                if r.info.status == "FINISHED"}
    missing = [s.key for s in specs if s.key not in finished]
    tracker.client.set_tag(parent_id, "trials_finished", str(len(specs) - len(missing)))
    tracker.client.set_tag(parent_id, "trials_failed", ",".join(failed))
    tracker.client.set_terminated(parent_id, "FINISHED" if not missing else ("FAILED" if failed else "KILLED"))
    console.print(f"{study.name}@{scale}: {len(specs) - len(missing)}/{len(specs)} trials finished"
                  + (f"; failed: {', '.join(failed)}" if failed else "")
                  + (f"; not run: {', '.join(k for k in missing if k not in failed)} (rerun with --resume)"
                     if set(missing) - set(failed) else "")
                  + f". MLflow: {tracker.uri}, parent run {parent_id}.")
    return 1 if missing else 0
