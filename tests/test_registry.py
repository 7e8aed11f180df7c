import pytest

from harness.registry import Registry, UnknownNameError


def test_did_you_mean_names_field_and_close_match():
    reg = Registry("model")
    reg.register("gsp_unet")(object)
    reg.register("unet2d")(object)
    with pytest.raises(UnknownNameError) as e:
        reg.get("gsp_unte", field="model.name")
    msg = str(e.value)
    assert msg.startswith("model.name: unknown model 'gsp_unte'")
    assert "Did you mean 'gsp_unet'" in msg
    assert "Known: gsp_unet, unet2d" in msg


def test_no_suggestion_for_unrelated_name_and_duplicates_rejected():
    reg = Registry("op")
    reg.register("group_shift")(object)
    assert "Did you mean" not in str(pytest.raises(UnknownNameError, reg.get, "zzz").value)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("group_shift")(object)


def test_builtin_registries_are_populated():
    import harness.data  # noqa: F401
    import harness.losses  # noqa: F401
    import harness.models  # noqa: F401
    from harness.registry import DATASETS, LOSSES, MODELS, OPS

    assert "gsp_unet" in MODELS and "group_shift" in OPS
    assert {"synthetic_organ", "synthetic_brats"} <= set(DATASETS.names())
    assert {"dice", "dice_ce"} <= set(LOSSES.names())


def _core_code_names(path):
    """Every import, identifier and string literal of a module's code (docstrings and comments,
    which cite papers, left out)."""
    import ast

    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            out |= {n.module or ""} | {a.name for a in n.names}
        elif isinstance(n, ast.Name):
            out.add(n.id)
        elif isinstance(n, ast.Attribute):
            out.add(n.attr)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
            out.add(n.value)
    return out


def test_the_core_never_imports_or_names_a_family_and_families_register_as_plugins_do():
    from pathlib import Path

    import harness
    from harness.registry import REGISTRIES

    root = Path(harness.__file__).parent
    families = sorted(p.name for p in (root / "families").iterdir() if (p / "__init__.py").is_file())
    assert families == ["brats2020_unet", "conresnet", "distill_dsm", "gsp_conv", "obelisk_net"]
    registered = {}  # name -> family, over every registry
    for reg in REGISTRIES:
        for fam in families:
            for name in reg.registered_by(f"harness.families.{fam}"):
                registered[name] = fam
    assert {"gsp_unet", "distill_dsm", "obelisk_hybrid", "conresnet", "brats_unet", "conres", "ohem_ce",
            "self_ensemble", "patient_removal", "brats2020", "brats_merge", "merge-labels",
            "prim::PythonOp._GroupShiftFn"} <= set(registered)
    for path in sorted(root.rglob("*.py")):
        if "families" in path.relative_to(root).parts:
            continue
        names = _core_code_names(path)
        imported = {n for n in names if n.startswith("harness.families.")}
        assert not imported, f"{path.relative_to(root)} imports {imported}"
        named = {n: registered[n] for n in names if n in registered} | {f: f for f in families if f in names}
        assert not named, f"{path.relative_to(root)} names a family's component: {named}"
