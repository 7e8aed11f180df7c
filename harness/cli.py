"""Command line of the harness. Bad input exits 2 with one line naming the field."""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
import warnings
from pathlib import Path

# A path that cannot be written: permission, a read-only file system, a file where a folder must
# be (or the reverse), a name too long, a full disk.
UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENAMETOOLONG,
              errno.ENOSPC}
SCALES = ("smoke", "quick", "paper")  # harness.config.SCALES, kept here so that --help imports nothing heavy
# Reports of the user's runs: the examples under reports/ are tracked, so writing there would
# dirty the checkout and tag every later run <commit>-dirty.
LOCAL_REPORTS = "reports/local"


def _shape(text: str) -> list[int]:
    try:
        dims = [int(p) for p in text.lower().split("x")]
    except ValueError:
        dims = []
    if len(dims) != 5 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"--input: {text!r} is not NxCxDxHxW with positive integers (e.g. 1x4x64x128x128)")
    return dims


def _kv(text: str) -> tuple[str, object]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param: {text!r} is not KEY=VALUE")
    k, v = text.split("=", 1)
    try:
        return k, yaml.safe_load(v)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise argparse.ArgumentTypeError(f"{k}: {v!r} is not a YAML value ({problem})") from None


def _positive(text: str) -> int:
    """A count of at least 1 (``--seeds``, ``--folds``, ``--trials``)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return n


def _nonnegative(text: str) -> int:
    """A whole number of at least 0 (``--seed``)."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return n


def _missing_data_root(roots: list[str] | None) -> str | None:
    """The first ``--data-root`` whose folder does not exist (``TASK=PATH`` or ``PATH``), said at
    once rather than after the study has loaded."""
    from harness.roots import split_data_root

    for item in roots or []:
        _, path = split_data_root(item)
        if not Path(path).exists():
            return f"error: --data-root: {path!r} does not exist"
    return None


def _run_options(args, **changes):
    """``harness run``'s options as ``harness.study.RunOptions`` (``changes`` over the command line's)."""
    from harness.study import RunOptions

    resources = {k: v for k, v in (("cpu", args.cpus_per_trial), ("gpu", args.gpus_per_trial)) if v is not None}
    return RunOptions(**{**dict(scale=args.scale, seeds=args.seeds, folds=args.folds, address=args.address,
                                resume=args.resume, tracking_uri=args.tracking_uri, storage=args.storage,
                                resources=resources, data_roots=args.data_root or [], dry=args.dry_run,
                                verbose=args.verbose), **changes})


def cmd_run(args) -> int:
    from harness.study import run_studies

    if args.until_decided and not args.dry_run:
        return _until_decided(args)
    code = run_studies(args.study, _run_options(args))
    if code in (0, 1) and not args.dry_run:  # trials ran (2: refused, nothing written)
        _tag_failures(args)
    return code


def _tag_failures(args) -> None:
    """Each finished trial's ``failed_to_train`` on its MLflow run (``harness.report.failures``),
    the study read as it ran (``--data-root``)."""
    from harness.config import load_study, with_data_roots
    from harness.report.failures import tag_failures

    for path in args.study:
        study = with_data_roots(load_study(path), args.scale, args.data_root or [])
        failed = tag_failures(study, args.scale, args.tracking_uri)
        if failed:
            print(f"{Path(path).stem}@{args.scale}: {failed} trial(s) failed to train by the study's rule "
                  f"(tag failed_to_train; the report lists them)")


def _until_decided(args) -> int:
    """``run --until-decided``: the study at its seeds, then 2 more at a time up to
    ``--max-seeds``, until every claim it judges is decided; each look's verdicts by
    ``harness.stats.sequential_verdict`` (the error spent over the looks, fixed in advance and
    recorded on the parent run, so that ``harness report`` judges as the run did)."""
    from harness.config import ConfigError, load_study
    from harness.report.claims import undecided
    from harness.tracking import LOOKS
    from harness.session import Session, SessionOptions
    from harness.study import run_studies

    if len(args.study) != 1:
        raise ConfigError("--until-decided: one study at a time")
    study = load_study(args.study[0])
    first = max(2, args.seeds or study.scales[args.scale].seeds or study.seeds)
    if args.max_seeds < first:
        raise ConfigError(f"--max-seeds: {args.max_seeds} is below the first look's {first} seeds")
    looks = sorted({*range(first, args.max_seeds, 2), args.max_seeds})
    print(f"{study.name}@{args.scale}: looks at {', '.join(map(str, looks))} seeds until every claim is decided")
    for i, n in enumerate(looks):
        code = run_studies(args.study, _run_options(args, seeds=n, resume=args.resume or i > 0, dry=False))
        if code:
            if code == 1:
                _tag_failures(args)
            return code
        with Session(SessionOptions(args.tracking_uri)) as session:
            exp = session.tracker.experiment(study.name)
            session.tracker.tag(session.tracker.find_parent(exp, args.scale).info.run_id, LOOKS,
                                ",".join(map(str, looks)))
        _tag_failures(args)  # over this look's seeds (read from LOOKS)
        left = undecided(study, args.scale, n, args.tracking_uri)
        print(f"after {n} seeds: " + (f"{len(left)} claim(s) undecided: {'; '.join(left)}" if left else
                                      "every claim decided"), flush=True)
        if not left:
            break
    return 0


def cmd_data(args) -> int:
    """``harness data NAME ARGS``: a registered data command (``DATA_COMMANDS``), its arguments
    parsed by its own parser; families add theirs (BraTS 2020's ``merge-labels``)."""
    from harness.registry import DATA_COMMANDS, UnknownNameError

    try:
        add_arguments, run = DATA_COMMANDS.get(args.data_cmd, field="harness data")
    except UnknownNameError as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"harness data {args.data_cmd}", description=(run.__doc__ or "").strip())
    add_arguments(parser)
    return run(parser.parse_args(args.data_args))





@contextlib.contextmanager
def _doing(console, what: str):
    """Say what a long single-process step is doing: a spinner whose text follows each sub-step
    on a terminal, the step's line on stderr elsewhere. Yields ``say(sub_step)``."""
    if console.is_terminal:
        with console.status(what) as status:
            yield lambda step: status.update(f"{what}: {step}")
    else:
        print(f"{what} ...", file=sys.stderr, flush=True)
        yield lambda step: None


def _cost_study(args, console) -> list[dict]:
    """Every variant of a study (one seed), costed as its trials cost themselves: the study's
    inferer (TTA: every view) on one input-sized window, at ``args.scale`` (default quick, whose
    input takes seconds; the paper's can take many minutes on a CPU)."""
    import time

    from harness.config import build_checked_model, load_study, resolve
    from harness.contract import out_channels
    from harness.cost import cost_report
    from harness.data import build_task
    from harness.inferers import build_inferer
    from harness.metrics import shown
    from harness.models import build_model
    from harness.outputs import adapt
    from harness.study import proxy_macs

    paper_cost = {m.name for m in shown("cost")}  # the paper's figure beside ours, where it prints one
    study = load_study(args.target)
    scale = args.scale or "quick"
    paper = {s.variant: s for s in resolve(study, "paper", 1, check=False)} if scale != "paper" else {}
    rows, spent, paper_work = [], 0.0, 0.0
    for s in resolve(study, scale, 1):
        task = build_task(s.data.dataset, **s.data.params)  # per variant: a table may span tasks
        shape = args.input or s.cost.input or [1, task.in_channels, *s.train.patch]
        build_checked_model(s.model, shape[2:], f"variant {s.variant!r}", s.train.output, shape[1],
                            out_channels=out_channels(len(task.regions), s.train.output))
        model = build_model(s.model.name, in_channels=shape[1], input_size=s.train.patch, output=s.train.output,
                            out_channels=out_channels(len(task.regions), s.train.output),
                            cpu_conv_route=s.train.cpu_conv_route, **s.model.params)
        adapt(model, s.train.outputs.name, s.train.outputs.params)
        inferer = build_inferer(s.train.inferer, shape[2:], shape[0], s.train.output)
        with _doing(console, f"costing {s.variant} at {'x'.join(map(str, shape))}") as say:
            t0 = time.perf_counter()
            row = {"name": s.variant, **cost_report(model, shape, latency=not args.no_latency, inferer=inferer,
                                                    train_shape=[s.train.batch_size, shape[1], *s.train.patch],
                                                    say=say)}
            spent += time.perf_counter() - t0
        if s.variant in paper and not args.input:  # the paper's work against this one's, counted on shrunk patches
            with contextlib.suppress(Exception):
                paper_work += proxy_macs(paper[s.variant], task) / proxy_macs(s, task)
        for metric, e in study.expected.get(s.variant, {}).items():  # the paper's figure beside ours
            if metric in paper_cost:
                row[f"paper {metric}"] = float(e) if isinstance(e, (int, float)) else e.value
        rows.append(row)
    used = "--input" if args.input else f"the {scale} scale's input (cost.input, else one patch)"
    note = f"costed at {used}: {', '.join(sorted({r['input'] for r in rows}))}"
    if paper_work and scale != "paper":
        ratio = paper_work / len(rows)
        note += (f"; the paper's nets and inputs are {ratio:.0f}x the MACs on average, roughly "
                 f"{spent * ratio / 60:.0f} min here (--scale paper)")
    print(note, file=sys.stderr)
    return rows


def _model_channels(args) -> tuple[list[int], int, str, str]:
    """A model's input shape, output channels and activation for ``harness cost MODEL``, and
    where they came from: ``--study``'s data set, patch and ``train.output`` (at ``--scale``,
    default quick), else ``--input`` and ``--out-channels`` (defaults 1x4x64x128x128 and 3);
    an explicit option wins."""
    if not args.study:
        shape = args.input or [1, 4, 64, 128, 128]
        return shape, args.out_channels or 3, "sigmoid", "from " + (
            "--input" if args.input else "the default input") + (
            " and --out-channels" if args.out_channels else " and the default 3 outputs; --study takes a study's")
    from harness.config import load_study, resolve
    from harness.contract import out_channels
    from harness.data import build_task

    path = args.study
    spec = resolve(load_study(path), args.scale or "quick", 1, check=False)[0]
    task = build_task(spec.data.dataset, **spec.data.params)
    shape = args.input or [1, task.in_channels, *spec.train.patch]
    out = args.out_channels or out_channels(len(task.regions), spec.train.output)
    return shape, out, spec.train.output, f"from {path} ({task.name}, {args.scale or 'quick'} scale)"


def cmd_cost(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from harness.config import ConfigError, ModelCfg, build_checked_model, import_plugins
    from harness.cost import cost_report
    from harness.models import build_model
    from harness.outputs import adapt
    from harness.registry import UnknownNameError

    console = Console(stderr=True)
    if args.target.endswith((".yaml", ".yml")):
        rows = _cost_study(args, console)
    else:
        import_plugins(args.plugin or [])
        shape, out, output, source = _model_channels(args)
        params = dict(args.param or [])
        try:
            build_checked_model(ModelCfg(name=args.target, params=params), shape[2:], "cost", output,
                                in_channels=shape[1], out_channels=out)
        except UnknownNameError as e:
            study = _did_you_mean_file(args.target, "study")
            if not study:
                raise
            raise ConfigError(f"{e} Or a study{study}") from None
        model = adapt(build_model(args.target, in_channels=shape[1], out_channels=out, input_size=shape[2:],
                                  output=output, **params))
        print(f"{args.target}: {shape[1]} input and {out} output channels ({output}), {source}", file=sys.stderr)
        with _doing(console, f"costing {args.target} at {'x'.join(map(str, shape))}") as say:
            rows = [{"name": args.target, **cost_report(model, shape, latency=not args.no_latency, train_shape=shape,
                                                        say=say)}]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    from harness.metrics import shown

    table = Table(title="cost (GMACs: fvcore, 1 multiply-add = 1)")
    costs = shown("cost")  # the catalogue's costs of this command
    cols = ["name", "input", *(m.name for m in costs if m.exact)] + (
        [] if args.no_latency else [*(m.name for m in costs if m.measured), "device"])
    cols += [f"paper {m.name}" for m in costs if any(f"paper {m.name}" in r for r in rows)]
    if not sys.stdout.isatty():  # a pipe or a file: whole numbers, tab-separated, never cut to a width
        print("\t".join(cols))
        for r in rows:
            print("\t".join("" if c not in r else f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c])
                            for c in cols))
        return 0
    for c in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*("" if c not in r else f"{r[c]:,.4g}" if isinstance(r[c], float)
                        else f"{r[c]:,}" if isinstance(r[c], int) else str(r[c]) for c in cols))
    Console().print(table)
    loaded = [r["name"] for r in rows if r.get("load_per_core", 0) > 1]
    if loaded:
        print(f"warning: latency of {', '.join(loaded)} measured beside other work (1-minute load above 1 per "
              f"core): it reads high; measure on an idle machine to compare", file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    from harness.config import load_study, resolve, with_data_roots
    from harness.report import FORMATS, write_report

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        print(f"error: --format: {', '.join(bad)} not allowed; choose from {', '.join(FORMATS)}", file=sys.stderr)
        return 2
    study = load_study(args.study)
    study = with_data_roots(study, args.scale, args.data_root or [])
    resolve(study, args.scale, check=False)  # bad input fails before anything is written; no model is built
    from harness.session import Session, SessionOptions

    # A damaged or half-created store: one line; a missing one is not created (MLflow would).
    uri = Session(SessionOptions(args.tracking_uri, writes=False, must_exist=(
        f"run `harness run {args.study} --scale {args.scale}` first or point --tracking-uri at the runs"))).uri
    out, problems = write_report(args.study, args.scale, formats, Path(args.out), uri, data_roots=args.data_root,
                                 require_runs=True, seeds=args.seeds)
    print(f"report: {out}/README.md")
    for p in problems:
        print(f"MISMATCH {p}")
    return 1 if args.verify and problems else 0


def cmd_plan(args) -> int:
    from rich.console import Console

    from harness.config import load_study, resolve
    from harness.report import load_runs
    from harness.report.plan import make_plan, plan_markdown
    from harness.session import Session, SessionOptions

    study = load_study(args.study)
    resolve(study, args.scale, check=False)  # the target scale's fields, before the store is read
    uri = Session(SessionOptions(args.tracking_uri, writes=False, must_exist=(
        f"a plan reads the runs of --from; run `harness run {args.study} --scale {args.source}` first"))).uri
    runs = load_runs(study, args.source, uri, seeds=args.seeds)
    with _doing(Console(stderr=True), f"planning {study.name} at {args.scale}") as say:
        plan = make_plan(runs, args.scale, args.device, say)
    print(plan_markdown(plan), end="")
    return 0


def cmd_evaluate(args) -> int:
    from harness.evaluate import run_evaluate

    return run_evaluate(args.study, args.scale, inferer=args.inferer, ensemble=args.ensemble, variants=args.variant,
                        tracking_uri=args.tracking_uri, data_roots=args.data_root)


def cmd_submit(args) -> int:
    from harness.submit import run_submit

    if len(args.data_root) > 1:
        from harness.config import ConfigError

        raise ConfigError(f"--data-root: given {len(args.data_root)} times; a submission reads one folder")
    return run_submit(args.study, args.scale, args.data_root[0], args.out, args.tracking_uri, row=args.row)


def cmd_search(args) -> int:
    from harness.search import SearchOptions, run_search

    return run_search(args.space, SearchOptions(
        trials=args.trials, address=args.address, resume=args.resume, tracking_uri=args.tracking_uri,
        reports=Path(args.out), verbose=args.verbose, scale=args.scale, seed=args.seed,
        report_only=args.report_only, export=args.export, confirm=args.confirm))


def cmd_bench(args) -> int:
    """The benchmarks live beside the package (``benchmarks/``, not installed): they time the
    families' ops and nets, which the core does not name."""
    import importlib.util

    from harness.config import ConfigError

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
    if not path.is_file():
        raise ConfigError(f"bench: {path} is missing; 'harness bench' runs from a checkout of the repository")
    spec = importlib.util.spec_from_file_location("harness_benchmarks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if args.cpu_layer:
        return module.run_cpu_layer(Path(args.out))
    return module.run_bench(Path(args.out), quick=args.quick, device=args.device)


REGISTRY_KINDS = ("models", "datasets", "ops", "losses", "optimizers", "schedules", "augmentations", "targets",
                  "inferers", "view_sets", "callbacks", "combiners", "data_commands", "cost_handles", "metrics")


def _registered(plugins: list[str]) -> dict[str, list[str]]:
    """Every registry's names. Without plugins they are read from an index in the cache, keyed by
    the package's files (their paths, sizes and modification times), so that a listing imports
    neither torch nor MONAI (seconds); the index is rebuilt, by importing, when a file changes."""
    import hashlib

    from harness.cache import cache_dir

    package = Path(__file__).resolve().parent
    stamp = hashlib.sha256(json.dumps(sorted(
        (str(f.relative_to(package)), f.stat().st_size, f.stat().st_mtime_ns) for f in package.rglob("*.py")
    )).encode()).hexdigest()[:16]
    index = cache_dir() / f"registry-index-{stamp}.json"
    if not plugins:
        try:
            return json.loads(index.read_text())
        except (OSError, ValueError):
            pass
    import harness.metrics  # noqa: F401  (the metric catalogue's built-ins)
    import harness.train  # noqa: F401  (imports, so registers, every component)
    from harness import registry
    from harness.config import import_plugins

    import_plugins(plugins)
    names = {kind: getattr(registry, kind.upper()).names() for kind in REGISTRY_KINDS}
    if not plugins:  # a plugin's registrations are not the package's: never cached
        import tempfile

        try:
            index.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=index.parent, suffix=".tmp", delete=False) as f:
                json.dump(names, f)
            os.replace(f.name, index)  # whole or not at all: a reader never sees half of it
        except OSError:
            pass  # an unwritable cache: the next listing imports again
    return names


def _yaml_files(kind: str) -> tuple[Path, list[str]] | None:
    """The working directory's ``studies/`` (``search_spaces/``), else the ones beside the
    package (a source checkout): the folder and its YAML files."""
    for folder in (Path(kind), Path(__file__).resolve().parents[1] / kind):
        found = sorted(p.name for p in folder.glob("*.yaml"))
        if found:
            return folder, found
    return None


def cmd_list(args) -> int:
    if args.kind in ("studies", "search_spaces", "all"):
        for kind in ("studies", "search_spaces") if args.kind == "all" else (args.kind,):
            found = _yaml_files(kind)
            if found:
                print(f"{kind} ({found[0]}): " + ", ".join(found[1]))
            elif args.kind != "all":
                print(f"{kind}: none in ./{kind} or beside the package")
        if args.kind != "all":
            return 0
    names = _registered(args.plugin or [])
    for kind in [args.kind] if args.kind != "all" else REGISTRY_KINDS:
        print(f"{kind}: {', '.join(names[kind])}")
    return 0


def _did_you_mean_file(path: str, kind: str) -> str:
    """A study or space named without its folder or with a typo: the closest file in the working
    directory's ``studies/`` (``search_spaces/``), as ``harness list`` names them."""
    import difflib

    folder = Path("studies" if kind == "study" else "search_spaces")
    known = {p.stem: p for p in sorted(folder.glob("*.yaml"))}
    hit = difflib.get_close_matches(Path(path).stem, list(known), n=1, cutoff=0.6)
    return f"; did you mean {known[hit[0]]}?" if hit else ""


DESCRIPTION = ("Benchmarks and ablation studies of efficient 3D medical image segmentation: train a study's "
               "variants (run), judge the paper's claims on them (report), re-evaluate (evaluate), write challenge "
               "label maps (submit), search a space (search), count costs (cost), check data (data), time the "
               "kernels (bench) and list what is registered (list). Bad input exits 2 with one line naming the "
               "field; 'harness COMMAND -h' gives a command's options.")


class Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for a mistyped command or option (Python 3.14's
    ``suggest_on_error``, which 3.11 lacks)."""

    def error(self, message: str):
        import difflib
        import re

        bad = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if bad:
            known = re.findall(r"'([^']*)'|([\w-]+)", bad.group(2))
            hit = difflib.get_close_matches(bad.group(1), [a or b for a, b in known], n=1)
            message += f"; did you mean {hit[0]!r}?" if hit else ""
        super().error(message)

    def unknown_options(self, extra: list[str]) -> None:
        """Exit 2 on arguments this (sub)command does not take, with the closest option."""
        import difflib

        options = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        hints = []
        for arg in extra:
            hit = difflib.get_close_matches(arg.split("=", 1)[0], options, n=1, cutoff=0.6) if arg.startswith("-") else []
            if hit:
                hints.append((arg, hit[0]))
        said = (f"; did you mean {hints[0][1]}?" if len(hints) == 1
                else "; did you mean " + ", ".join(f"{h} for {a}" for a, h in hints) + "?" if hints else "")
        self.error(f"unrecognized arguments: {' '.join(extra)}{said}")


def build_parser() -> tuple[Parser, argparse._SubParsersAction]:
    """The ``harness`` parser and its subcommands (docs/commands.md is checked against them)."""
    p = Parser(prog="harness", description=DESCRIPTION)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND", parser_class=Parser)
    _add_run(sub)
    _add_cost(sub)
    _add_report(sub)
    _add_plan(sub)
    _add_evaluate(sub)
    _add_submit(sub)
    _add_search(sub)
    _add_data(sub)
    _add_bench(sub)
    _add_list(sub)
    return p, sub


def _add_run(sub) -> None:
    r = sub.add_parser("run", help="train every variant x seed of a study (or of several) as Ray Tune trials, "
                                   "logged to MLflow")
    r.add_argument("study", nargs="+",
                   help="a study YAML; several (e.g. studies/*.yaml) run as one Ray run: one start-up, one "
                        "longest-first order over all their trials, each study its own MLflow runs and report")
    r.add_argument("--scale", default="smoke", choices=list(SCALES))
    r.add_argument("--seeds", type=_positive, default=None, help="seeds per variant (default: the study's)")
    r.add_argument("--folds", type=_positive, default=None,
                   help="run every fold of a k-fold split (folder data sets; default: the scale's folds, else 1)")
    r.add_argument("--address", default=None, help="Ray cluster: 'auto' or 'ray://host:10001' (default: local Ray)")
    r.add_argument("--resume", action="store_true", help="finish an interrupted run; finished trials are kept")
    r.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///mlflow.db)")
    r.add_argument("--storage", default=None, metavar="PATH|URI",
                   help="Ray's trial storage (checkpoints travel through it): default ray_results/ beside "
                        "mlflow.db; on a multi-node cluster a shared path or s3://...")
    r.add_argument("--cpus-per-trial", type=float, default=None, help="override the study's resources.cpu")
    r.add_argument("--gpus-per-trial", type=float, default=None, help="override resources.gpu (fractions allowed)")
    r.add_argument("--dry-run", action="store_true", help="validate, list trials and estimate their compute")
    r.add_argument("--until-decided", action="store_true",
                   help="add seeds, 2 at a time, until every claim is reproduced or contradicted (or --max-seeds); "
                        "the verdicts' error is spent over the looks")
    r.add_argument("--max-seeds", type=_positive, default=10, help="the last look of --until-decided (default 10)")
    r.add_argument("--data-root", action="append", default=None, metavar="[TASK=]PATH",
                   help="point the study's data (or one of its tasks) at a folder on disk")
    r.add_argument("-v", "--verbose", type=int, default=1, choices=[0, 1, 2],
                   help="0: the closing line only; 1 (default): on a terminal a live table (each running trial's "
                        "epoch, step, loss; an ETA from measured step times), elsewhere a line per start-up phase "
                        "and per settled trial; 2: Ray's status tables, trial logs and warnings too")
    r.set_defaults(fn=cmd_run)


def _add_cost(sub) -> None:
    c = sub.add_parser("cost", help="parameters, GMACs, latency and memory of a model or of a study's variants")
    c.add_argument("target", help="a registered model name, a study YAML, or a study's name (studies/NAME.yaml)")
    c.add_argument("--input", type=_shape, default=None, help="NxCxDxHxW, e.g. 1x4x128x128x64")
    c.add_argument("--scale", default=None, choices=list(SCALES),
                   help="a study's scale to cost at (default: quick, which takes seconds; paper: the paper's input, "
                        "which can take many minutes on a CPU)")
    c.add_argument("--param", type=_kv, action="append", help="model parameter KEY=VALUE (YAML value)")
    c.add_argument("--out-channels", type=int, default=None,
                   help="a model's output channels (default: from --study, else 3)")
    c.add_argument("--study", default=None, metavar="STUDY",
                   help="a model's channels, output and default input from this study's data and patch (at --scale)")
    c.add_argument("--no-latency", action="store_true", help="skip the measured figures: latency, inference and training memory")
    c.add_argument("--json", action="store_true", help="the figures as JSON on stdout")
    c.add_argument("--plugin", action="append", metavar="MODULE",
                   help="import a plugin family first, so that its models can be costed (repeatable)")
    c.set_defaults(fn=cmd_cost)


def _add_report(sub) -> None:
    rp = sub.add_parser("report", help="the paper's table, statistics and accuracy-vs-cost plots from MLflow")
    rp.add_argument("study")
    rp.add_argument("--scale", default="smoke", choices=list(SCALES))
    rp.add_argument("--seeds", type=_positive, default=None,
                    help="count the first N seeds (default: the study's at the scale; runs of further seeds "
                         "are left out and said)")
    rp.add_argument("--format", default="md,html,csv", help="comma-separated: md, html, tex, csv")
    rp.add_argument("--verify", action="store_true", help="exit 1 when a pinned number is outside its tolerance")
    rp.add_argument("--out", default=LOCAL_REPORTS,
                    help=f"output folder (default: {LOCAL_REPORTS}, git-ignored: the tracked examples under "
                         f"reports/ stay as committed)")
    rp.add_argument("--tracking-uri", default=None)
    rp.add_argument("--data-root", action="append", default=None, metavar="[TASK=]PATH",
                    help="as given to 'harness run' (the trials' data is part of their configuration)")
    rp.set_defaults(fn=cmd_report)


def _add_plan(sub) -> None:
    pl = sub.add_parser("plan", help="per claim, the seeds that would decide it (80%% power) and the training "
                                     "hours they take at a scale, from the study's runs")
    pl.add_argument("study", help="a study YAML or a study's name (studies/NAME.yaml)")
    pl.add_argument("--scale", default="paper", choices=list(SCALES), help="the scale to plan for (default: paper)")
    pl.add_argument("--from", dest="source", default="quick", choices=list(SCALES),
                    help="the scale whose finished runs give the claims' variance and the step times (default: quick)")
    pl.add_argument("--seeds", type=_positive, default=None, help="count the first N seeds of --from's runs")
    pl.add_argument("--device", default=None, choices=["cpu", "cuda"],
                    help="measure a training step of each variant at --scale on this device instead of scaling "
                         "the recorded step times (a paper-sized step takes minutes on a CPU)")
    pl.add_argument("--tracking-uri", default=None)
    pl.set_defaults(fn=cmd_plan)


def _add_evaluate(sub) -> None:
    ev = sub.add_parser("evaluate", help="re-evaluate a study's saved models with another inferer or as ensembles")
    ev.add_argument("study")
    ev.add_argument("--scale", default="smoke", choices=list(SCALES))
    ev.add_argument("--inferer", default=None, metavar="NAME|YAML",
                    help="e.g. tta or '{name: tta, params: {views: mirror}}' (default: each trial's own)")
    ev.add_argument("--ensemble", default="none", choices=["none", "seeds"],
                    help="seeds: one ensemble per variant (and fold) of its seeds' models")
    ev.add_argument("--variant", action="append", default=None, help="only these variants (repeatable)")
    ev.add_argument("--tracking-uri", default=None)
    ev.add_argument("--data-root", action="append", default=None, metavar="[TASK=]PATH",
                    help="as given to 'harness run'")
    ev.set_defaults(fn=cmd_evaluate)


def _add_submit(sub) -> None:
    sm = sub.add_parser("submit", help="label maps of a challenge's unlabelled validation/test cases, in its "
                                       "submission format (ConResNet Table I, BraTS 2020 Table 4)")
    sm.add_argument("study")
    sm.add_argument("--scale", default="paper", choices=list(SCALES))
    sm.add_argument("--data-root", required=True, action="append", metavar="PATH",
                    help="the challenge's unlabelled case folders")
    sm.add_argument("--out", required=True, help="a new folder for the label maps")
    sm.add_argument("--row", default=None, help="another row than the study's submission.row")
    sm.add_argument("--tracking-uri", default=None)
    sm.set_defaults(fn=cmd_submit)


def _add_search(sub) -> None:
    se = sub.add_parser("search", help="multi-objective NAS-style search (Optuna via Ray Tune), Pareto set out")
    se.add_argument("space", help="a search space YAML (search_spaces/*.yaml): base study, scale, knobs, "
                                  "objectives, sampler, trials")
    se.add_argument("--scale", default=None, choices=list(SCALES),
                    help="another scale than the space's own (its 'scale:'); the search is then its own, named "
                         "<name>-<scale>")
    se.add_argument("--seed", type=_nonnegative, default=None, metavar="N",
                    help="every strategy's sampler seed; the search is then its own, named <name>-seed<N>, and "
                         "<out>/<name>/seeds.md compares the strategies over every seed run so far")
    se.add_argument("--trials", type=_positive, default=None,
                    help="total trials to run, counting complete ones, those that failed in training and "
                         "those stopped at a rung (default: the space's)")
    se.add_argument("--address", default=None, help="Ray cluster: 'auto' or 'ray://host:10001'")
    se.add_argument("--resume", action="store_true", help="continue the Optuna study in its storage")
    se.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///mlflow.db); "
                                                         "the Optuna journal goes under optuna/ beside it")
    se.add_argument("--out", default=LOCAL_REPORTS,
                    help=f"folder for <space>/pareto.md, pareto.png, trials.csv and pareto_variants.yaml "
                         f"(default: {LOCAL_REPORTS}, git-ignored)")
    se.add_argument("--report-only", action="store_true",
                    help="write the Pareto outputs again from the journal, training nothing")
    se.add_argument("--confirm", type=_positive, default=None, metavar="N",
                    help="then retrain the Pareto points at N seeds and mark those whose place holds at 95%% "
                         "(confirm.md, confirm.png); default: the space's confirm.seeds")
    se.add_argument("--export", default=None, metavar="STUDY.yaml",
                    help="also write a runnable study of the Pareto set (the base study's recipe, a variant per "
                         "point) to this new file")
    se.add_argument("-v", "--verbose", type=int, default=1, choices=[0, 1, 2],
                    help="0: a line per search; 1 (default): a live table on a terminal, else a line per "
                         "settled trial; 2: Ray's status tables, trial logs and Optuna's lines too")
    se.set_defaults(fn=cmd_search)


def _add_data(sub) -> None:
    d = sub.add_parser("data", help="data commands: 'harness data check ROOT' validates a folder before training; "
                                     "families add theirs ('harness list data_commands')")
    d.add_argument("data_cmd", metavar="NAME", help="check, or a family's command (e.g. merge-labels)")
    d.add_argument("data_args", nargs=argparse.REMAINDER, help="the command's arguments ('harness data NAME -h')")
    d.set_defaults(fn=cmd_data)


def _add_bench(sub) -> None:
    b = sub.add_parser("bench", help="speed benchmarks (results under reports/bench)")
    b.add_argument("--out", default="reports/bench")
    b.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    b.add_argument("--device", choices=["all", "cpu", "cuda"], default="all",
                   help="where to measure (all: the CPU, and CUDA when present); cuda: a lent GPU's lines alone")
    b.add_argument("--cpu-layer", action="store_true",
                   help="only what the CPU layer buys on the quick set: every quick study's training compute with "
                        "it and without (HARNESS_CPU_KERNELS=0), alternated; cpu_layer.md under --out")
    b.set_defaults(fn=cmd_bench)


def _add_list(sub) -> None:
    ls = sub.add_parser("list", help="the studies, search spaces and registered components (models, losses, ...)")
    ls.add_argument("kind", nargs="?", default="all", choices=["all", "studies", "search_spaces", *REGISTRY_KINDS])
    ls.add_argument("--plugin", action="append", metavar="MODULE",
                    help="import a plugin family first, so that its components are listed (repeatable)")
    ls.set_defaults(fn=cmd_list)


def main(argv: list[str] | None = None) -> int:
    p, sub = build_parser()
    args, extra = p.parse_known_args(argv)
    if extra:
        sub.choices[args.cmd].unknown_options(extra)
    target = getattr(args, "target", None)
    if target and not target.endswith((".yaml", ".yml")) and (Path("studies") / f"{target}.yaml").is_file():
        args.target = str(Path("studies") / f"{target}.yaml")  # cost: a study named without its file
    named = getattr(args, "study", None) if args.cmd in ("cost", "plan") else None
    if named and not named.endswith((".yaml", ".yml")) and (Path("studies") / f"{named}.yaml").is_file():
        args.study = str(Path("studies") / f"{named}.yaml")  # cost --study NAME, plan NAME
    warnings.filterwarnings("ignore", category=FutureWarning)
    # A missing study or space file is known before torch, MONAI, MLflow and Ray load (seconds).
    studies = getattr(args, "study", None)
    studies = studies if isinstance(studies, list) else [studies]  # run takes several
    for kind, path, always in (*(("study", st, True) for st in studies),
                               ("space", getattr(args, "space", None), True),
                               ("study", getattr(args, "target", None), False)):  # cost: a model name, or a study
        if path and (always or str(path).endswith((".yaml", ".yml"))) and not Path(path).is_file():
            print(f"error: {kind}: file {str(path)!r} does not exist{_did_you_mean_file(path, kind)}", file=sys.stderr)
            return 2
    missing = _missing_data_root(getattr(args, "data_root", None))
    if missing:
        print(missing, file=sys.stderr)
        return 2
    from harness.config import ConfigError, StudyCfg, load_yaml
    from harness.registry import UnknownNameError

    try:
        # So is a file that breaks the schema (a bad value, a wrong type, an unknown key): the
        # registries' torch and MONAI load only once it passes.
        if getattr(args, "space", None):
            from harness.search import SearchCfg

            load_yaml(args.space, SearchCfg, "search space")
        for path in (*studies, getattr(args, "target", None)):
            if path and str(path).endswith((".yaml", ".yml")):
                load_yaml(path, StudyCfg)
        from harness.session import QUIET, environment

        with environment(QUIET):
            return args.fn(args)
    except (ConfigError, UnknownNameError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the user cannot write (or name): one line, not a traceback
        if e.errno not in UNWRITABLE or not e.filename:
            raise
        print(f"error: {os.path.abspath(e.filename)}: {e.strerror}; the command needs to write there (the working directory, "
              f"--out, --tracking-uri's folder, or $HARNESS_CACHE, default ~/.cache/harness)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
