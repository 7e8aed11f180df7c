"""Checks of what the report renders from a study: the layout's axes and baseline, and the
variants each claim's sides name."""
from __future__ import annotations


from harness.config.expand import table_rows
from harness.config.schema import ConfigError, StudyCfg, VariantCfg
from harness.registry import UnknownNameError


def _axis_labels(vs: list[VariantCfg], axis: str) -> list[str]:
    """The labels an axis (grid axis, tag or ``variant``) takes over the variants, in order."""
    return list(dict.fromkeys({"variant": v.name, **v.tags}.get(axis, v.name) for v in vs))


def check_layout(study: StudyCfg) -> None:
    """The layout's axes and baseline name things the study has."""
    lay = study.layout
    vs = table_rows(study)
    axes = ["variant", *study.grid, *{k for v in vs for k in v.tags}]
    for field, axis in (("rows", lay.rows), ("columns", lay.columns)):
        if isinstance(axis, str) and axis not in axes:
            raise ConfigError(str(UnknownNameError("axis", axis, axes, f"layout.{field}")))
    if study.submission is not None and study.submission.row not in [v.name for v in vs]:
        raise ConfigError(str(UnknownNameError("row", study.submission.row, [v.name for v in vs], "submission.row")))
    if lay.baseline is not None and lay.baseline not in [v.name for v in vs]:
        raise ConfigError(str(UnknownNameError("variant", lay.baseline, [v.name for v in vs], "layout.baseline")))
    if isinstance(lay.value, dict):  # column groups: each key a label of the columns axis
        if not isinstance(lay.columns, str):
            raise ConfigError("layout.value: metric groups {label: [metric, ...]} need columns to be an axis")
        labels = _axis_labels(vs, lay.columns)
        for label in lay.value:
            if label not in labels:
                raise ConfigError(str(UnknownNameError(f"label of axis {lay.columns!r}", label, labels,
                                                       "layout.value")))
    if lay.values is not None and lay.rows:  # row groups: each key a label of the rows axis, or "*"
        labels = _axis_labels(vs, lay.rows)
        for label in lay.values:
            if label != "*" and label not in labels:
                raise ConfigError(str(UnknownNameError(f"label of axis {lay.rows!r}", label, [*labels, "*"],
                                                       "layout.values")))
    for i, c in enumerate(study.claims):
        if isinstance(c.than, (int, float)):  # a published figure: only the variant side to check
            claim_members(study, c.better, vs, f"claims[{i}].better")
            continue
        sides = [claim_members(study, c.better, vs, f"claims[{i}].better"),
                 claim_members(study, c.than, vs, f"claims[{i}].than")]
        if set(sides[0]) & set(sides[1]):
            raise ConfigError(f"claims[{i}]: variants {sorted(set(sides[0]) & set(sides[1]))} are on both sides")


def claim_members(study: StudyCfg, side, vs: list[VariantCfg] | None = None, field: str = "claims") -> list[str]:
    """The variants a claim's side names: one variant, or every variant whose tags match."""
    vs = vs if vs is not None else table_rows(study)
    names = [v.name for v in vs]
    if isinstance(side, str):
        if side not in names:
            raise ConfigError(str(UnknownNameError("variant", side, names, field)))
        return [side]
    hits = [v.name for v in vs if all({"variant": v.name, **v.tags}.get(k) == label for k, label in side.items())]
    if not hits:
        raise ConfigError(f"{field}: no variant has tags {side}")
    return hits
