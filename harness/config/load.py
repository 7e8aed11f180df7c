"""Reading a study: bounded YAML with unique keys and finite numbers, ``extends``, plugins (each
must register something), the name and layout checks, and ``--data-root`` (a synthetic data set
swapped for a folder)."""
from __future__ import annotations

import importlib
import inspect
import math
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from harness.config.checks import check_names
from harness.config.expand import merge
from harness.config.layout import check_layout
from harness.config.schema import ConfigError, DataCfg, StudyCfg, format_validation
from harness.roots import split_data_root
from harness.registry import DATASETS, UnknownNameError


# A study expands to some hundred values; aliases that expand to more than this are refused
# before they are built (nine nested levels of nine aliases, under 1 KB, expand to 9^9).
MAX_YAML_NODES = 100_000


def _load_bounded(text: str) -> Any:
    """YAML through ``_UniqueKeyLoader``, refusing a document whose aliases expand past
    ``MAX_YAML_NODES`` (its expanded size counted on the node graph, each node once)."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size: dict[int, int] = {}

        def expanded(n: yaml.Node) -> int:
            if id(n) not in size:
                size[id(n)] = 0  # a recursive alias counts once
                kids = [x for pair in n.value for x in pair] if isinstance(n, yaml.MappingNode) else \
                    n.value if isinstance(n, yaml.SequenceNode) else []
                size[id(n)] = 1 + sum(expanded(k) for k in kids)
                if size[id(n)] > MAX_YAML_NODES:
                    raise yaml.YAMLError(f"its aliases expand to more than {MAX_YAML_NODES:,} values (an alias bomb?)")
            return size[id(n)]

        expanded(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key]}); give each key once",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _non_finite(node: Any, path: str = "") -> tuple[str, float] | None:
    """The first .inf / .nan anywhere in parsed YAML, with its dotted path."""
    if isinstance(node, float) and not math.isfinite(node):
        return path or "(top level)", node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        hit = _non_finite(v, f"{path}.{k}" if path else str(k))
        if hit:
            return hit
    return None


def _read_mapping(p: Path, kind: str) -> dict:
    """A YAML file's mapping, every malformation said with the file and line."""
    if not p.is_file():
        raise ConfigError(f"{kind}: file {str(p)!r} does not exist")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError(f"{p}: line {line}: byte 0x{data[e.start]:02x} is not UTF-8; save the {kind} as UTF-8 "
                          f"text") from None
    try:
        raw = _load_bounded(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: malformed YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a {kind} must be a YAML mapping, got {type(raw).__name__}")
    bad = _non_finite(raw)
    if bad:
        raise ConfigError(f"{p}: {bad[0]}: {bad[1]} is not a finite number")
    return raw


def _extended(p: Path, raw: dict, chain: list[Path]) -> dict:
    """``extends: BASE.yaml`` (beside the file): the base study with this file's keys merged on
    it (``merge``: mappings merge, lists and values replace, ``key+`` appends), as detectron2's
    ``_BASE_``. The child names itself; chains are followed, cycles refused."""
    base_path = p.parent / str(raw["extends"])
    if base_path.resolve() in chain:
        raise ConfigError(f"{p}: extends: {raw['extends']!r} leads back to {chain[0].name} (a cycle)")
    base = _read_mapping(base_path, "study") if base_path.is_file() else None
    if base is None:
        raise ConfigError(f"{p}: extends: {raw['extends']!r} is not a study file beside it ({base_path})")
    if "extends" in base:
        base = _extended(base_path, base, [*chain, base_path.resolve()])
    child = {k: v for k, v in raw.items() if k != "extends"}
    if child.get("name", base.get("name")) == base.get("name"):
        raise ConfigError(f"{p}: name: a study that extends {base_path.name} needs a name of its own")
    # What the base's claims, expectations and rows said about its own table is not the child's.
    base = {k: v for k, v in base.items() if k not in ("expected", "claims", "title", "description", "submission")}
    return merge(base, child)


def load_yaml(path: str | Path, schema: type[BaseModel], kind: str = "study"):
    """Read a YAML file into ``schema``; every failure is a ConfigError naming file and field."""
    p = Path(path)
    raw = _read_mapping(p, kind)
    if kind == "study" and "extends" in raw:
        raw = _extended(p, raw, [p.resolve()])
    try:
        return schema.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation(e, str(p), model=schema).replace("invalid study", f"invalid {kind}")) from None


def load_study(path: str | Path) -> StudyCfg:
    study = load_yaml(path, StudyCfg)
    import_plugins(study.plugins)
    check_names(study)
    check_layout(study)
    return study


MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def import_plugins(modules: list[str]) -> None:
    """Import the study's plugin modules (their registrations add models, losses, ...); each must
    be a module name (not a path) and register at least one component."""
    from harness.registry import REGISTRIES

    for name in modules:
        if not isinstance(name, str) or not MODULE_NAME.fullmatch(name):
            raise ConfigError(f"plugins: {name!r} is not a module name (dotted Python identifiers, e.g. "
                              f"my_lab.nets; a file path is not one): put its folder on PYTHONPATH and name the module")
        before = sum(len(reg.names()) for reg in REGISTRIES)
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"plugins: cannot import {name!r} ({e}); it must be importable (on PYTHONPATH) "
                              f"on the driver and on every Ray worker") from None
        # Registered now, or earlier by the module itself (imported before, e.g. by another study).
        grew = sum(len(reg.names()) for reg in REGISTRIES) > before
        if not grew and not any(reg.registered_by(name) for reg in REGISTRIES):
            raise ConfigError(f"plugins: {name!r} registered no component; a plugin registers models, losses, "
                              f"... with harness.registry's decorators (e.g. @MODELS.register('my_net'))")


PORTABLE_DATA_PARAMS = ("labels",)  # kept when --data-root swaps a synthetic set for a folder


def with_data_roots(study: StudyCfg, scale: str, roots: list[str]) -> StudyCfg:
    """The study with its data at the folders of ``--data-root PATH`` (or ``TASK=PATH``, one of
    its tasks); ``study`` itself is left as it is.

    A synthetic data set is replaced by the folder's format (detected), with the study's
    ``data.folder`` parameters, so a paper table runs on real data without editing its study
    file; the task's training overrides stay.
    """
    if not roots:
        return study
    study = study.model_copy(deep=True)
    for item in roots:
        name, path = split_data_root(item)
        if name is not None:
            if name not in study.tasks:
                raise ConfigError(str(UnknownNameError("task", name, list(study.tasks), "--data-root")))
            cfg = study.tasks[name][scale]
        else:
            if study.tasks:
                raise ConfigError(f"--data-root: {study.name} spans tasks {sorted(study.tasks)}; "
                                  f"name one: --data-root TASK=PATH")
            cfg = None
        dataset = cfg.dataset if cfg else study.data.dataset
        old = cfg.params if cfg else {**study.data.params, **study.scales[scale].data}
        # A synthetic set's parameters mean nothing to the folder's format, but for the label
        # encoding (BraTS regions or classes), which is the study's choice, not the data's.
        params = {"root": path, **{k: old[k] for k in PORTABLE_DATA_PARAMS if k in old},
                  **(study.data.folder if cfg is None else {})}
        if "root" not in inspect.signature(DATASETS.get(dataset)).parameters:
            from harness.data.folders import detect_format

            dataset = detect_format(path)
            if dataset is None:
                raise ConfigError(f"--data-root: {path}: cannot tell the format (no dataset.json, CaseNN.mhd or "
                                  f"BraTS case folders); set the study's dataset to msd, brats or promise12")
        elif cfg is not None:
            params = {**cfg.params, "root": path}
        if cfg is not None:
            cfg.dataset, cfg.params = dataset, params
        elif dataset == study.data.dataset:
            study.scales[scale].data = {**study.scales[scale].data, "root": path}
        else:
            study.data = DataCfg(dataset=dataset)
            study.scales[scale].data = params
    return study
