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
