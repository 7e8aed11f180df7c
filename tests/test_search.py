"""Search spaces: valid-only group choices, clear errors, and a tiny search end to end with resume."""
import re
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from harness.cli import main
from harness.config import ConfigError, ModelCfg, build_checked_model
from harness.search import Space, encode
from harness.tracking import Tracker

BASE = {
    "name": "tiny_base", "paper": "gsp_conv", "title": "tiny",
    "data": {"dataset": "synthetic_organ", "params": {"n_cases": 4, "shape": [16, 32, 32]}},
    "model": {"name": "gsp_unet", "params": {"conv": "pointwise", "widths": [4, 4, 8, 8, 8], "insert": "CSC",
                                             "groups": [[1, 1, 1]] * 5}},
    "variants": [{"name": "pw"}],
    "train": {"patch": [16, 32, 32], "epochs": 1, "steps_per_epoch": 2, "batch_size": 2},
    "cost": {"latency_runs": 1},
    "scales": {"smoke": {}, "quick": {}, "paper": {}},
}
SPACE = {
    "name": "tiny", "study": "base.yaml", "scale": "smoke",
    "knobs": {"insert": {"choice": ["CSC", "CCS"]}, "shift_ratio": {"uniform": [0.25, 1.0]},
              "groups.0": {"values": [1, 2, 4]}, "groups.4": {"values": [1, 2, 4]},
              "widths": {"choice": [[4, 4, 8, 8, 8], [4, 8, 16, 16, 16]]}},
    "objectives": [{"metric": "mean_dice", "mode": "max"}, {"metric": "gmacs", "mode": "min"}],
    "sampler": {"name": "nsga2", "seed": 0, "population_size": 2},
    "trials": 3,
}


def write(tmp_path, space=SPACE):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE, sort_keys=False))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    return tmp_path / "space.yaml"


def test_group_knobs_offer_only_valid_choices(tmp_path):
    space = Space(write(tmp_path))
    assert len(space.choices["groups.0"]) == 27  # stage 1 is 16x32x32: 1, 2, 4 divide every axis
    assert sorted(space.choices["groups.4"]) == [[1, 1, 1], [1, 1, 2], [1, 2, 1], [1, 2, 2]]  # stage 5 is 1x2x2
    params = space.params({"insert": "CCS", "shift_ratio": 0.5, "groups.0": "[2, 4, 1]", "groups.4": "[1, 2, 2]",
                           "widths": "[4, 8, 16, 16, 16]"})
    assert params["groups"] == [[2, 4, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 2, 2]]
    assert params["widths"] == [4, 8, 16, 16, 16] and params["insert"] == "CCS"


def test_another_scale_is_its_own_search(tmp_path):
    path = write(tmp_path)
    assert Space(path).cfg.name == "tiny" and Space(path, "smoke").cfg.name == "tiny"  # the file's own scale
    other = Space(path, "quick")
    assert other.cfg.name == "tiny-quick" and other.cfg.scale == "quick"
    assert other.spec_for(other.cfg_default()).scale == "quick"


def test_shipped_dsm_space_trains_on_its_task(tmp_path):
    path = Path(__file__).parents[1] / "search_spaces" / "dsm.yaml"
    spec = Space(path).spec_for({"alpha": 0.75, "blocks": "[4, 5, 6, 7]"})
    assert spec.model.name == "distill_dsm" and spec.model.params == {"alpha": 0.75, "blocks": [4, 5, 6, 7]}
    assert spec.data.params["in_channels"] == 2 and spec.data.params["regions"] == ["pz", "tz"]  # the prostate task
    bad = yaml.safe_load(path.read_text())
    bad["task"], bad["study"] = "prostat", str(path.parent / bad["study"])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="task: unknown task 'prostat'. Did you mean 'prostate'"):
        Space(tmp_path / "bad.yaml")


@pytest.mark.parametrize("knobs,objectives,message", [
    ({"groups.4": {"choice": [[1, 2, 2], [2, 2, 2]]}}, None, "knobs.groups.4: groups [[2, 2, 2]] do not divide stage 5"),
    ({"groups.9": {"values": [1, 2]}}, None, "knobs.groups.9: stage 9 does not exist"),
    ({"insrt": {"choice": ["CSC"]}}, None, "unknown parameter of model 'gsp_unet' 'insrt'. Did you mean 'insert'"),
    ({"insert": {"choice": ["CSC"], "uniform": [0, 1]}}, None, "give exactly one of"),
    ({"insert": {"choice": ["CSC"]}}, [{"metric": "dice", "mode": "max"}], "objectives: unknown metric 'dice'"),
])
def test_bad_space_is_a_clear_error(tmp_path, knobs, objectives, message):
    space = {**SPACE, "knobs": knobs, **({"objectives": objectives} if objectives else {})}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        Space(write(tmp_path, space))


@pytest.mark.slow
def test_tiny_search_end_to_end_and_resume(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path)
    optuna.logging.enable_propagation()  # Optuna's own handler writes past capsys; caplog sees propagated records
    try:
        assert main(["search", str(path), "-v", "0"]) == 0
    finally:
        optuna.logging.disable_propagation()
    # Optuna's own lines ("A new study created", "Using an existing study") stay out below -v 2.
    assert "study" not in caplog.text and optuna.logging.get_verbosity() == optuna.logging.INFO
    assert main(["search", str(path), "-v", "0"]) == 2  # exists: needs --resume
    assert "pass --resume" in capsys.readouterr().err
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna" / "tiny.journal")))
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert len(study.get_trials(states=[optuna.trial.TrialState.COMPLETE])) == 3
    study.ask()  # a trial left RUNNING, as by a killed search
    assert main(["search", str(path), "--trials", "4", "--resume", "-v", "0"]) == 0
    assert "3 trials run" in capsys.readouterr().out
    study = optuna.load_study(study_name="tiny", storage=storage)
    states = [t.state for t in study.get_trials()]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4 and optuna.trial.TrialState.RUNNING not in states
    trained = [tuple(sorted(t.params.items())) for t in study.get_trials(states=[optuna.trial.TrialState.COMPLETE])]
    assert len(set(trained)) == 4  # the resumed sampler did not re-propose the first session's points
    client = Tracker().client
    exp = client.get_experiment_by_name("harness/search-tiny")
    runs = client.search_runs([exp.experiment_id], "tags.harness_role = 'trial'")
    assert sum(r.info.status == "FINISHED" for r in runs) == 4 and all("gmacs" in r.data.metrics for r in runs)
    # Each run names its Optuna trial (pareto.md's "trial" column): the four complete ones.
    complete = {t.number for t in study.get_trials(states=[optuna.trial.TrialState.COMPLETE])}
    assert {int(r.data.tags["tag.optuna_trial"]) for r in runs if r.info.status == "FINISHED"} == complete
    out = tmp_path / "reports" / "local" / "tiny"
    assert (out / "pareto.png").exists() and "Pareto set of search tiny" in (out / "pareto.md").read_text()
    assert re.search(r"complete trials. Wall time \d+\.\d min.", (out / "pareto.md").read_text())
    variants = yaml.safe_load((out / "pareto_variants.yaml").read_text())["variants"]
    assert variants and len(variants) == len(study.best_trials)
    for v in variants:  # each exported Pareto point is a ready variant of the base study
        build_checked_model(ModelCfg(name="gsp_unet", params={**BASE["model"]["params"], **v["params"]}), [16, 32, 32], v["name"])
    # The outputs again from the journal alone, with the Pareto set as a study that runs.
    (out / "pareto.md").unlink()
    assert main(["search", str(path), "--report-only", "--export", "front.yaml", "-v", "0"]) == 0
    assert (out / "pareto.md").exists()
    assert len(client.search_runs([exp.experiment_id], "tags.harness_role = 'trial'")) == len(runs)  # none trained
    exported = yaml.safe_load((tmp_path / "front.yaml").read_text())
    assert [v["name"] for v in exported["variants"]] == [v["name"] for v in variants]
    assert main(["run", "front.yaml", "--scale", "smoke", "-v", "0"]) == 0
    assert main(["search", str(path), "--report-only", "--export", "front.yaml", "-v", "0"]) == 2  # never over a file
    # A lost journal is rebuilt from MLflow's runs: nothing is trained again, the outputs count all four.
    (tmp_path / "optuna" / "tiny.journal").unlink()
    assert main(["search", str(path), "--trials", "4", "--resume", "-v", "0"]) == 0
    assert "4 trial(s) MLflow holds were missing" in capsys.readouterr().out
    assert len(client.search_runs([exp.experiment_id], "tags.harness_role = 'trial'")) == len(runs)
    assert "4 complete trials" in (out / "pareto.md").read_text()
    # The front confirmed over 2 seeds: each point retrained, its interval, whether its place holds.
    assert main(["search", str(path), "--report-only", "--confirm", "2", "-v", "0"]) == 0
    confirmed = (out / "confirm.md").read_text()
    assert "confirmed over 2 seeds" in confirmed and "| holds" in confirmed and (out / "confirm.png").exists()
    rows = [ln for ln in confirmed.splitlines() if ln.startswith("| t")]
    assert len(rows) == len(variants) and all(("True" in r) != ("not surely better" in r) for r in rows)
    exp2 = client.get_experiment_by_name("harness/tiny_confirm")
    pareto_runs = client.search_runs([exp2.experiment_id], "tags.harness_role = 'trial'")
    assert len(pareto_runs) == 2 * len(variants), sorted(r.data.tags["trial_key"] for r in pareto_runs)
    assert all(r.info.status == "FINISHED" for r in pareto_runs)
    assert main(["search", str(path), "--report-only", "--confirm", "1", "-v", "0"]) == 2


def test_pareto_lists_each_configuration_once(tmp_path):
    from optuna.distributions import CategoricalDistribution

    from harness.search import write_pareto

    space = Space(write(tmp_path, {**SPACE, "knobs": {"insert": {"choice": ["CSC", "CCS"]}}}))
    study = optuna.create_study(directions=["maximize", "minimize"])
    dist = {"insert": CategoricalDistribution(["CSC", "CCS"])}
    for insert, dice, gmacs in (("CSC", 60.0, 2.0), ("CCS", 50.0, 1.0), ("CSC", 60.0, 2.0), ("CCS", 40.0, 3.0)):
        study.add_trial(optuna.trial.create_trial(params={"insert": insert}, distributions=dist, values=[dice, gmacs]))
    out = write_pareto(space, study, tmp_path / "out")
    names = [v["name"] for v in yaml.safe_load((out / "pareto_variants.yaml").read_text())["variants"]]
    assert names == ["search_tiny_t001", "search_tiny_t000"]  # the repeat (trial 2) and the dominated one left out
    assert len((out / "trials.csv").read_text().splitlines()) == 5  # every complete trial kept in the CSV


def test_pareto_files_whatever_was_sampled_and_exported_knobs_keep_their_types(tmp_path):
    from optuna.distributions import CategoricalDistribution, IntDistribution
    from optuna.trial import create_trial

    from harness.search import write_pareto

    knobs = {"net": {"choice": [{"model": "gsp_unet"}, {"model": "unet3d"}]},
             "base_width": {"int": [4, 8], "when": {"model": "unet3d"}}}
    space = Space(write(tmp_path, {**SPACE, "knobs": knobs}))
    net = CategoricalDistribution([encode(o) for o in knobs["net"]["choice"]])
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(create_trial(params={"net": encode({"model": "gsp_unet"})}, distributions={"net": net},
                                 values=[50.0, 1.0]))
    files = ("pareto.md", "pareto.png", "trials.csv", "pareto_variants.yaml")
    out = write_pareto(space, study, tmp_path / "a")  # unet3d and its knob never drawn
    assert all((out / f).exists() for f in files)
    study.add_trial(create_trial(params={"net": encode({"model": "unet3d"}), "base_width": 4},
                                 distributions={"net": net, "base_width": IntDistribution(4, 8)}, values=[60.0, 2.0]))
    out = write_pareto(space, study, tmp_path / "b")
    variants = yaml.safe_load((out / "pareto_variants.yaml").read_text())["variants"]
    unet = next(v for v in variants if v.get("model") == "unet3d")
    assert unet["params"] == {"base_width": 4} and type(unet["params"]["base_width"]) is int  # not 4.0


def _conditional_space(tmp_path, sampler):
    tmp_path.mkdir(exist_ok=True)
    knobs = {"net": {"choice": [{"model": "gsp_unet"}, {"model": "unet3d"}]},
             "shift_ratio": {"uniform": [0.1, 1.0], "when": {"model": "gsp_unet"}},
             "base_width": {"int": [2, 16], "when": {"model": "unet3d"}}}
    return Space(write(tmp_path, {**SPACE, "knobs": knobs, "sampler": sampler}))


def test_the_default_sampler_on_a_conditional_space_is_not_random_and_adapts(tmp_path):
    from harness.search import make_sampler, sampler_name

    space = _conditional_space(tmp_path, {"seed": 3})
    assert space.conditional and sampler_name(space.cfg.sampler, True) == "tpe"

    def objective(trial):  # a synthetic landscape: unet3d at base_width 14 is best
        space.define_by_run(trial)
        if "base_width" in trial.params:
            return 90 - abs(trial.params["base_width"] - 14) * 3, 1.0
        return 40 + 10 * trial.params["shift_ratio"], 0.5

    def run(sampler):
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study.optimize(objective, n_trials=40)
        finally:
            optuna.logging.set_verbosity(optuna.logging.INFO)
        return [t.params for t in study.trials], [t.values[0] for t in study.trials]

    ours, ours_dice = run(make_sampler(space.cfg.sampler, space.conditional))
    rand, rand_dice = run(optuna.samplers.RandomSampler(seed=3))
    assert ours != rand  # not random search in disguise
    # It adapts: its last 20 proposals score better than its first 20 and than random's last 20.
    assert np.mean(ours_dice[20:]) > np.mean(ours_dice[:20]) and np.mean(ours_dice[20:]) > np.mean(rand_dice[20:])


def test_sampler_options_reach_optuna(tmp_path):
    from harness.search import make_sampler

    space = _conditional_space(tmp_path, {"name": "nsga2", "population_size": 4, "mutation_prob": 0.3,
                                          "crossover_prob": 0.5})
    sampler = make_sampler(space.cfg.sampler, space.conditional)
    assert isinstance(sampler, optuna.samplers.NSGAIISampler) and sampler._population_size == 4
    tpe = make_sampler(_conditional_space(tmp_path / "t", {"name": "tpe", "n_startup_trials": 3,
                                                       "constant_liar": False}).cfg.sampler, True)
    assert isinstance(tpe, optuna.samplers.TPESampler) and tpe._n_startup_trials == 3 and tpe._group
    assert not tpe._constant_liar
    with pytest.raises(ConfigError, match="group: true needs multivariate: true"):
        _conditional_space(tmp_path / "g", {"name": "tpe", "group": True, "multivariate": False})


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "search_spaces").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_spaces_validate_against_their_base_study(path):
    space = Space(path)  # knobs, objectives and sampler checked against the base study's model and metrics
    assert space.cfg.name == path.stem and space.cfg.scale == "quick" and space.cfg.trials >= 6


def test_train_knobs_and_mapping_choices_set_training_fields_and_linked_parameters():
    path = Path(__file__).parents[1] / "search_spaces" / "conres.yaml"
    space = Space(path)
    spec = space.spec_for({"decoder": '{"mapping": true, "attention": false}', "view": "coronal",
                           "train.loss.params.lam": 0.1, "train.loss.params.boundary": True})
    assert spec.model.params == {"width": 8, "mapping": True, "attention": False, "view": "coronal"}
    assert spec.train.loss.name == "conres" and spec.train.loss.params == {"lam": 0.1, "boundary": True}
    assert [t.name for t in spec.train.targets] == ["signed_distance"]  # the space's train block, on every trial
    assert spec.train.lr == 0.001  # the rest of the base study's quick recipe is kept


def test_brats20_space_switches_heads_with_their_loss_and_procedures_as_lists():
    import json

    space = Space(Path(__file__).parents[1] / "search_spaces" / "brats20.yaml")
    off = space.spec_for({"supervision": json.dumps({"deep_supervision": False, "train.deep_supervision": None}),
                          "attention": True, "train.callbacks": "[]",
                          "inferer": json.dumps({"train.inferer": {"name": "tta", "params": {"views": "brats2020"}}})})
    assert off.model.params["deep_supervision"] is False and off.train.deep_supervision is None
    assert off.train.callbacks == [] and off.train.inferer.name == "tta" and off.train.inferer.params["views"] == "brats2020"
    on = space.spec_for({"supervision": json.dumps({"deep_supervision": True}), "attention": False,
                         "train.callbacks": json.dumps([{"name": "self_ensemble", "params": {"cycles": 2}}]),
                         "inferer": json.dumps({"train.inferer": "sliding_window"})})
    assert on.train.deep_supervision.reduction == "mean" and on.train.callbacks[0].name == "self_ensemble"


def test_pareto_variants_carry_training_overrides(tmp_path):
    from optuna.distributions import CategoricalDistribution

    from harness.search import write_pareto

    space = Space(write(tmp_path, {**SPACE, "knobs": {"train.lr": {"choice": [0.01, 0.1]}}}))
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(optuna.trial.create_trial(params={"train.lr": 0.1}, values=[60.0, 2.0],
                                              distributions={"train.lr": CategoricalDistribution([0.01, 0.1])}))
    out = write_pareto(space, study, tmp_path / "out")
    (v,) = yaml.safe_load((out / "pareto_variants.yaml").read_text())["variants"]
    assert v["train"] == {"lr": 0.1} and v["params"] == {}


def test_unknown_training_field_in_a_knob_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="lrr"):
        Space(write(tmp_path, {**SPACE, "knobs": {"train.lrr": {"choice": [0.1]}}}))


def test_nsga2_sampler_survives_pickling_as_ray_tune_does():
    # Optuna 5.1's genetic samplers hold a thread lock; Ray Tune pickles the search algorithm.
    import pickle

    from ray import cloudpickle

    from harness.search import SamplerCfg, make_sampler

    sampler = make_sampler(SamplerCfg(name="nsga2", seed=7, population_size=4), conditional=False)
    for dumps in (pickle.dumps, cloudpickle.dumps):
        copy = pickle.loads(dumps(sampler))
        assert isinstance(copy, optuna.samplers.NSGAIISampler) and copy.population_size == 4
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=copy)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=6)
    assert len(study.trials) == 6


def test_options_whose_nets_compute_the_same_function_are_said_before_training(tmp_path):
    # With one spatial group per stage Group Shift is the identity (Eq. 4, G = 1): every insert
    # position trains the plain net, as two_families' first seed-0 run did (equal Dice).
    knobs = {"insert": {"choice": ["CSC", "CCS"]}, "train.lr": {"choice": [0.01, 0.02]}}
    (w,) = Space(write(tmp_path, {**SPACE, "knobs": knobs})).check_options()
    assert w.startswith("warning: knobs.insert: options 'CSC', 'CCS' build nets that compute the same function")
    grouped = {**BASE, "model": {**BASE["model"], "params": {**BASE["model"]["params"],
                                                             "groups": [[2, 2, 2]] * 4 + [[1, 2, 2]]}}}
    (tmp_path / "g").mkdir()
    path = write(tmp_path / "g", {**SPACE, "knobs": knobs})
    (tmp_path / "g" / "base.yaml").write_text(yaml.safe_dump(grouped, sort_keys=False))
    assert Space(path).check_options() == []  # Group Shift acts; the learning rates are two recipes


def test_an_option_that_cannot_be_built_is_refused_or_skipped_before_training(tmp_path, monkeypatch, capsys):
    import harness.tune

    def no_ray(*a, **k):
        raise AssertionError("Ray started")

    monkeypatch.setattr(harness.tune, "check_capacity", no_ray)
    monkeypatch.chdir(tmp_path)
    knobs = {"insert": {"choice": ["CSC", "BOGUS"]}, "shift_ratio": {"uniform": [0.25, 1.0]}}
    path = write(tmp_path, {**SPACE, "knobs": knobs})
    assert main(["search", str(path), "-v", "0"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "knobs.insert: option 'BOGUS' cannot be built" in err
    assert "on_invalid: skip" in err and sorted(p.name for p in tmp_path.iterdir()) == ["base.yaml", "space.yaml"]
    space = Space(write(tmp_path, {**SPACE, "knobs": knobs, "on_invalid": "skip"}))
    warnings = space.check_options()
    assert space.choices["insert"] == ["CSC"] and "'BOGUS' left out" in warnings[0]
    # The base study's one spatial group per stage leaves the shifted share nothing to change.
    assert len(warnings) == 2 and warnings[1].startswith("warning: knobs.shift_ratio: options 0.25, 1.0 build nets")


def test_a_configuration_that_failed_in_training_is_never_proposed_again(tmp_path):
    from optuna.storages.journal import JournalFileBackend
    from ray.tune.search import Searcher

    from harness.tune import FreshOptunaSearch

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "s.journal")))
    def space(trial):
        trial.suggest_categorical("a", [1, 2])

    searcher = FreshOptunaSearch(space=space, metric=["m", "n"],
                                      mode=["max", "min"], storage=storage,
                                      sampler=optuna.samplers.RandomSampler(seed=0), study_name="s")
    first = searcher.suggest("t0")
    searcher.on_trial_complete("t0", {"trial_error": "ValueError: boom", "time_total_s": 3.0})  # trained, raised
    second = searcher.suggest("t1")
    assert second["a"] != first["a"]
    searcher.on_trial_complete("t1", {"m": 1.0, "n": 1.0, "final": 1, "time_total_s": 3.0})
    assert searcher.suggest("t2") == Searcher.FINISHED  # the failed one is not drawn again: the space is spent
    study = optuna.load_study(study_name="s", storage=storage)
    assert [t.state.name for t in study.trials if t.state.name != "PRUNED"] == ["FAIL", "COMPLETE"]


@pytest.mark.slow  # starts Ray
def test_a_search_whose_tuner_raises_exits_1_with_the_cause(tmp_path, monkeypatch, capsys):
    # Optuna 5.1's unpicklable NSGA-II lock once made Tuner.fit raise: the search said
    # "0 trials complete" and exited 0. Now: exit 1, the cause, the parent run FAILED.
    import harness.tune

    class Crashed:
        crashed, error, finished = True, "TypeError: cannot pickle '_thread.lock' object", []

    monkeypatch.setattr(harness.tune, "run_search_trials", lambda *a, **k: Crashed())
    monkeypatch.chdir(tmp_path)
    assert main(["search", str(write(tmp_path)), "-v", "0"]) == 1
    assert "Ray Tune stopped with TypeError: cannot pickle '_thread.lock' object" in capsys.readouterr().out
    client = Tracker().client
    (parent,) = client.search_runs([client.get_experiment_by_name("harness/search-tiny").experiment_id],
                                   "tags.harness_role = 'study'")
    assert parent.info.status == "FAILED" and not (tmp_path / "reports").exists()


def test_a_resumed_sampler_never_trains_a_configuration_twice_and_stops_when_the_space_is_spent(tmp_path):
    # NSGA-II restarts from its seed on resume and re-proposes its first generation: the searcher
    # tells each repeat PRUNED and asks again.
    from optuna.storages.journal import JournalFileBackend
    from ray.tune.search import Searcher

    from harness.compat import picklable_sampler
    from harness.tune import FreshOptunaSearch

    def space(trial):
        trial.suggest_categorical("a", [1, 2, 3])
        trial.suggest_categorical("b", ["x", "y"])

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "s.journal")))

    def searcher():
        return FreshOptunaSearch(space=space, metric=["m", "n"], mode=["max", "min"], storage=storage,
                                      sampler=picklable_sampler("NSGAIISampler")(seed=0, population_size=2), study_name="s")

    first = searcher()
    seen = []
    for i in range(3):  # a first session: three trials complete
        seen.append(first.suggest(f"t{i}"))
        first.on_trial_complete(f"t{i}", {"m": float(i), "n": 1.0, "final": 1})  # a trial's last result
    again = searcher()  # resumed: the same seed
    for i in range(3, 6):
        config = again.suggest(f"t{i}")
        assert config not in seen, (config, seen)
        seen.append(config)
        again.on_trial_complete(f"t{i}", {"m": float(i), "n": 1.0, "final": 1})
    assert again.suggest("t6") is Searcher.FINISHED  # all 6 configurations trained once
    study = optuna.load_study(study_name="s", storage=storage)
    complete = [t.params for t in study.get_trials(states=[optuna.trial.TrialState.COMPLETE])]
    assert len(complete) == 6 and len({tuple(sorted(p.items())) for p in complete}) == 6


def test_the_searcher_tells_optuna_a_stopped_trial_pruned_and_a_raised_one_failed(tmp_path):
    from harness.tune import FreshOptunaSearch

    def space(trial):
        trial.suggest_categorical("a", [1, 2, 3, 4])

    searcher = FreshOptunaSearch(space=space, metric=["m", "n"], mode=["max", "min"],
                                      sampler=optuna.samplers.RandomSampler(seed=0), study_name="s")
    for i in range(3):
        searcher.suggest(f"t{i}")
    searcher.on_trial_complete("t0", {"m": 0.5, "n": 1.0, "epoch": 1, "time_total_s": 3.0})  # last result: a rung
    searcher.on_trial_complete("t1", {"final": 1, "trial_error": "Traceback ...", "time_total_s": 1.0})
    searcher.on_trial_complete("t2", {"m": 0.7, "n": 2.0, "epoch": 3, "final": 1, "time_total_s": 9.0})
    t0, t1, t2 = searcher._ot_study.get_trials()
    state = optuna.trial.TrialState
    assert (t0.state, t1.state, t2.state) == (state.PRUNED, state.FAIL, state.COMPLETE)
    assert t0.values is None and t2.values == [0.7, 2.0]
    assert t0.user_attrs == {"trial_time_s": 3.0, "epochs": 2} and t2.user_attrs["epochs"] == 4


def test_a_search_across_families_asks_each_model_only_its_own_knobs(tmp_path):
    from optuna.distributions import CategoricalDistribution

    from harness.search import write_pareto

    nets = [{"model": "gsp_unet", "conv": "pointwise"}, {"model": "distill_dsm"}]
    space = Space(write(tmp_path, {**SPACE, "knobs": {
        "net": {"choice": nets},
        "insert": {"choice": ["CSC", "CCS"], "when": {"model": "gsp_unet"}},
        "alpha": {"choice": [0.25, 1.0], "when": {"model": "distill_dsm"}}}}))
    assert space.models == ["gsp_unet", "distill_dsm"]
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    asked = []
    for _ in range(12):
        t = study.ask()
        space.define_by_run(t)
        asked.append(t.params)
        model = space.model_of(t.params)
        assert set(t.params) == {"net", "insert" if model == "gsp_unet" else "alpha"}
        spec = space.spec_for(t.params)
        assert spec.model.name == model
        if model == "distill_dsm":  # another family: its option's and knobs' parameters, not the study's
            assert spec.model.params == {"alpha": t.params["alpha"]}
        else:
            assert spec.model.params["insert"] == t.params["insert"] and spec.model.params["widths"] == [4, 4, 8, 8, 8]
    assert {space.model_of(p) for p in asked} == {"gsp_unet", "distill_dsm"}
    # The Pareto table and the exported variants name each point's model.
    done = optuna.create_study(directions=["maximize", "minimize"])
    dist = {"net": CategoricalDistribution([encode(n) for n in nets]), "insert": CategoricalDistribution(["CSC", "CCS"]),
            "alpha": CategoricalDistribution([0.25, 1.0])}
    for params, dice, gmacs in (({"net": encode(nets[0]), "insert": "CSC"}, 70.0, 2.0),
                                ({"net": encode(nets[1]), "alpha": 0.25}, 60.0, 1.0),
                                ({"net": encode(nets[1]), "alpha": 1.0}, 50.0, 1.5)):
        done.add_trial(optuna.trial.create_trial(params=params, distributions={k: dist[k] for k in params},
                                                 values=[dice, gmacs]))
    out = write_pareto(space, done, tmp_path / "out")
    variants = yaml.safe_load((out / "pareto_variants.yaml").read_text())["variants"]
    assert [(v.get("model"), v["params"]) for v in variants] == [("distill_dsm", {"alpha": 0.25}),
                                                                  (None, {"conv": "pointwise", "insert": "CSC"})]
    text = (out / "pareto.md").read_text()
    assert "| distill_dsm |        2 |               1 |" in text and "| gsp_unet    |        1 |               1 |" in text
    assert "nan" not in text  # a knob a model was not asked: a dash
    with pytest.raises(ConfigError, match=r"knobs.alpha.when.model: unknown model a knob chooses 'distil_dsm'"):
        Space(write(tmp_path, {**SPACE, "knobs": {"net": {"choice": nets},
                                                  "alpha": {"choice": [0.5], "when": {"model": "distil_dsm"}}}}))


def test_a_knob_asked_only_under_another_knobs_options_builds_no_net_twice(tmp_path):
    # Group Shift's ratio matters only where Group Shift is inserted: asked under those options
    # alone, every point of the space is its own net.
    nets = [{"model": "gsp_unet", "conv": "pointwise"}, {"model": "distill_dsm"}]
    knobs = {"net": {"choice": nets}, "insert": {"choice": [None, "CSC"], "when": {"model": "gsp_unet"}},
             "shift_ratio": {"choice": [0.25, 1.0], "when": {"model": "gsp_unet", "insert": ["CSC"]}},
             "alpha": {"choice": [0.25, 1.0], "when": {"model": "distill_dsm"}}}
    space = Space(write(tmp_path, {**SPACE, "knobs": knobs}))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        t = study.ask()
        space.define_by_run(t)
        model = space.model_of(t.params)
        want = ({"net", "insert"} | ({"shift_ratio"} if t.params.get("insert") == "CSC" else set())
                if model == "gsp_unet" else {"net", "alpha"})
        assert set(t.params) == want, t.params
        seen.add(space.spec_for(t.params).model_dump_json(include={"model"}))
    assert len(seen) == 2 + 2 + 1  # distill x2, gsp with Group Shift x2, the plain pointwise net once
    # The pre-flight builds the ratio's options where it is asked: under Group Shift.
    ratio = [c for name, _, c in space.option_points() if name == "shift_ratio"]
    assert len(ratio) == 2 and all(c["insert"] == "CSC" for c in ratio)
    # A trial of the space is found back as its point, the ratio not asked where it is off.
    plain = space.spec_for({"net": encode(nets[0]), "insert": None})
    assert space.config_of(plain) == {"net": encode(nets[0]), "insert": None}
    shifted = {"net": encode(nets[0]), "insert": "CSC", "shift_ratio": 1.0}
    assert space.config_of(space.spec_for(shifted)) == shifted
    for when, match in [({"insrt": ["CSC"]}, r"knobs.shift_ratio.when: unknown knob declared above 'insrt'.*insert"),
                        ({"alpha": [0.25]}, r"knobs.shift_ratio.when: unknown knob declared above 'alpha'"),
                        ({"insert": "CSC"}, r"knobs.shift_ratio.when.insert: give a list of insert's options"),
                        ({"insert": ["CCS"]}, r"knobs.shift_ratio.when.insert: \['CCS'\] are not options of insert")]:
        with pytest.raises(ConfigError, match=match):
            Space(write(tmp_path, {**SPACE, "knobs": {**knobs, "shift_ratio": {"choice": [0.5], "when": when}}}))


def test_promotion_order_ranks_by_non_domination_then_crowding():
    from harness.pareto import promotion_order

    # (Dice, GMACs): 4 is dominated by 0 and 2; 5 repeats 1; the front's ends come first.
    pts = [[60, 1], [70, 5], [65, 3], [50, 0.5], [55, 4], [70, 5]]
    order = promotion_order(pts, ["max", "min"])
    assert order[-1] == 4 and set(order[:5]) == {0, 1, 2, 3, 5}
    assert set(order[:3]) == {1, 3, 5}  # each objective's best: infinite crowding distance
    assert promotion_order([[3.0], [1.0], [2.0]], ["max"]) == [0, 2, 1]
    assert promotion_order([[3.0], [1.0], [2.0]], ["min"]) == [1, 2, 0]


def test_hypervolume_matches_hand_computed_fronts():
    """Hypervolume in the objectives' own units and directions, against hand-computed fronts."""
    from harness.pareto import hypervolume

    # Dice up, GMACs down, reference (0, 10): 60 x 9 + (70 - 60) x 5.
    assert hypervolume([[60, 1], [70, 5]], ["max", "min"], [0, 10]) == pytest.approx(590.0)
    assert hypervolume([[60, 1], [50, 2]], ["max", "min"], [0, 10]) == pytest.approx(540.0)  # dominated adds 0
    assert hypervolume([[60, 12]], ["max", "min"], [0, 10]) == 0.0  # beyond the reference
    assert hypervolume([], ["max", "min"], [0, 10]) == 0.0
    # Three objectives, all minimised: two unit-overlapping boxes of volume 2 each.
    assert hypervolume([[0, 1, 1], [1, 0, 1]], ["min"] * 3, [2, 2, 2]) == pytest.approx(3.0)


class _T:
    def __init__(self, i, config=None):
        self.trial_id, self.config = i, config or {}


def test_a_trial_goes_on_while_its_rung_accuracy_ranks_among_the_trials_that_cost_no_more():
    from harness.pareto import continues_at_rung

    rung = {"a": ([50.0], [1.0])}
    go = lambda k: continues_at_rung(rung, k, ["max"], ["min"], 2)  # noqa: E731
    assert go("a")  # the first at the rung: nothing costs no more
    rung["b"] = ([60.0], [2.0])
    assert go("b")  # costlier but more accurate: a non-dominated newcomer goes on
    rung["c"] = ([40.0], [3.0])
    assert not go("c")  # costlier and worse than both cheaper ones: 3rd of 3
    rung["d"] = ([30.0], [0.5])
    assert go("d")  # the cheapest: nothing that costs no more beats it
    rung["e"] = ([55.0], [2.0])  # ties b's cost: its peers a, b, d, itself; 2nd of 4 goes on
    assert go("e") and not continues_at_rung(rung, "e", ["max"], ["min"], 4)  # at eta 4 only the 1st of 4
    rung["f"] = ([45.0], [2.0])
    assert not go("f")  # 4th of its 5 peers (b, e, a above it)
    # A net 4x cheaper leads after a few steps whatever it reaches: with a band of 2 it is no peer.
    early = {"cheap": ([70.0], [1.0]), "big": ([50.0], [4.0])}
    assert not continues_at_rung(early, "big", ["max"], ["min"], 2)
    assert continues_at_rung(early, "big", ["max"], ["min"], 2, band=2.0)
    assert not continues_at_rung({**early, "near": ([60.0], [2.5])}, "big", ["max"], ["min"], 2, band=2.0)


def test_halving_knows_the_exact_cost_and_a_resumed_search_ranks_against_earlier_rungs():
    """The rung's accuracy comes from the trial, its GMACs from the space (counted before
    training): each rung result is written to the Optuna trial, and a new scheduler on the same
    study (a resumed search) ranks against them."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from harness.search.schema import Objective, SchedulerCfg
    from harness.tune import CostAwareHalving

    go, stop = TrialScheduler.CONTINUE, TrialScheduler.STOP
    gmacs = {"small": 1.0, "big": 4.0}
    space = SimpleNamespace(
        cfg=SimpleNamespace(objectives=[Objective(metric="mean_dice", mode="max"), Objective(metric="gmacs", mode="min")],
                            scheduler=SchedulerCfg(name="asha", reduction_factor=2, cost_band=None)),
        exact_costs=lambda config: {"gmacs": gmacs[config["net"]]})
    study = optuna.create_study(directions=["maximize", "minimize"])
    searcher = SimpleNamespace(_ot_trials={})

    def trial(tid, net):
        searcher._ot_trials[tid] = study.ask()
        return _T(tid, {"net": net})

    sched = CostAwareHalving(space, searcher, study, [1, 2])
    rung = lambda dice, epoch=0: {"epoch": epoch, "mean_dice": dice, "train_loss": 0.1}  # noqa: E731  no gmacs sent
    assert sched.on_trial_result(None, trial("a", "small"), rung(50)) == go
    assert sched.on_trial_result(None, trial("b", "big"), rung(40)) == stop  # costs more, less accurate
    assert sched.on_trial_result(None, trial("c", "big"), rung(70)) == go  # costs more, more accurate
    assert sched.on_trial_result(None, _T("a", {"net": "small"}), {"epoch": 0, "train_loss": 0.3, "final": 1}) == go
    assert study.trials[1].user_attrs["rung_1"] == {"values": [40.0], "costs": [4.0]}
    resumed = CostAwareHalving(space, searcher, study, [1, 2])  # a resumed search: the journal holds the rungs
    assert resumed.on_trial_result(None, trial("d", "big"), rung(45)) == stop  # 3rd of a, b, c, d (big: all peers)
    assert resumed.on_trial_result(None, trial("e", "small"), rung(45)) == stop  # 2nd of a, e at eta 2: 1 goes on
    with pytest.raises(RuntimeError, match="lacks objectives"):
        resumed.on_trial_result(None, trial("f", "small"), {"epoch": 0, "train_loss": 0.3})


def test_a_stopped_configuration_is_answered_from_the_store_not_trained_again(tmp_path):
    from ray.tune.search import Searcher

    from harness.tune import FreshOptunaSearch

    def space(trial):
        trial.suggest_categorical("a", [1, 2])

    searcher = FreshOptunaSearch(space=space, metric=["m", "n"], mode=["max", "min"],
                                      sampler=optuna.samplers.RandomSampler(seed=0), study_name="s")
    first = searcher.suggest("t0")
    searcher.on_trial_complete("t0", {"m": 0.5, "n": 1.0, "epoch": 0, "time_total_s": 3.0, "time_cpu_s": 2.5})
    second = searcher.suggest("t1")
    assert second != first  # the stopped one is not drawn again
    searcher.on_trial_complete("t1", {"m": 0.7, "n": 2.0, "final": 1, "time_total_s": 9.0})
    assert searcher.suggest("t2") is Searcher.FINISHED  # both trained once: the space is spent
    assert searcher._ot_study.trials[0].user_attrs["trial_cpu_s"] == 2.5  # the strategies' trial-time


def test_a_trial_validates_on_rung_cases_and_sends_its_cost_at_rungs_only_when_asked(tmp_path, monkeypatch):
    import harness.train
    from harness.config import resolve

    (tmp_path / "base.yaml").write_text(yaml.safe_dump(
        {**BASE, "data": {"dataset": "synthetic_organ", "params": {"n_cases": 4, "val_cases": 3, "shape": [16, 32, 32]}},
         "train": {**BASE["train"], "epochs": 3, "steps_per_epoch": 1, "val_every": 3}}, sort_keys=False))
    from harness.config import load_study

    spec = resolve(load_study(tmp_path / "base.yaml"), "smoke", 1)[0]
    scored, reports = [], []
    real = harness.train.evaluate
    monkeypatch.setattr(harness.train, "evaluate", lambda model, task, *a: scored.append(len(task.val)) or real(model, task, *a))
    final = harness.train.run_trial(spec, report=lambda m, e: reports.append((e, m)), rungs=[1, 2], rung_cases=1)
    n_val = scored[-1]
    assert scored == [1, 1, n_val] and n_val > 1  # rungs score one case; the last epoch all
    assert [e for e, m in reports if "mean_dice" in m and "gmacs" in m] == [0, 1]  # rung results carry the cost
    assert final["gmacs"] == dict(reports)[0]["gmacs"]  # measured once, before training
    assert "mean_dice" in dict(reports)[2] and len(final["per_case"]) == n_val
    assert all(0 < m["time_cpu_s"] <= final["time_cpu_s"] for _, m in reports)  # the trial's CPU time so far
    reports.clear()
    harness.train.run_trial(spec, report=lambda m, e: reports.append((e, m)), rungs=[1, 2], rung_cost=False)
    assert "mean_dice" in dict(reports)[0] and not any("gmacs" in m for _, m in reports[:-1])  # the scheduler counts it


def test_a_run_of_the_base_study_maps_back_onto_the_space(tmp_path):
    from harness.config import load_study, resolve

    nets = [{"model": "gsp_unet", "conv": "pointwise"}, {"model": "distill_dsm"}]
    space = Space(write(tmp_path, {**SPACE, "knobs": {
        "net": {"choice": nets}, "insert": {"choice": ["CSC", "CCS"], "when": {"model": "gsp_unet"}},
        "widths": {"choice": [[4, 4, 8, 8, 8], [4, 8, 16, 16, 16]], "when": {"model": "gsp_unet"}},
        "alpha": {"choice": [0.25, 1.0], "when": {"model": "distill_dsm"}}}}))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(8):  # every point the search trains maps back to itself
        t = study.ask()
        space.define_by_run(t)
        assert space.config_of(space.spec_for(t.params, "x")) == t.params
    base = resolve(load_study(tmp_path / "base.yaml"), "smoke", 2)  # the base study's variant "pw", seeds 0, 1
    assert space.config_of(base[0]) == {"net": json_enc(nets[0]), "insert": "CSC", "widths": "[4, 4, 8, 8, 8]"}
    assert space.config_of(base[1]) is None  # seed 1: not the trial a search trains
    other = base[0].model_copy(update={"train": base[0].train.model_copy(update={"lr": 0.5})})
    assert space.config_of(other) is None  # another recipe: not a point of this space


def json_enc(v):
    return encode(v)


@pytest.mark.slow
def test_strategies_compared_with_halving_and_a_warm_start(tmp_path, monkeypatch, capsys):
    """A search beside a random one and a successive-halving one, each warm-started from the
    base study's finished run: stopped trials are PRUNED with the epochs they ran, the report
    gives hypervolume against trial-time, and a resumed search runs nothing again."""
    monkeypatch.chdir(tmp_path)
    space = {**SPACE, "knobs": {"insert": {"choice": ["CSC", "CCS"]}, "widths": SPACE["knobs"]["widths"]},
             "train": {"epochs": 4, "steps_per_epoch": 1, "val_every": 4}, "warm_start": True, "trials": 2,
             "compare": [{"name": "random", "sampler": {"name": "random"}},
                         {"name": "halving", "sampler": {"name": "random"}, "trials": 3,
                          "scheduler": {"name": "asha", "reduction_factor": 2, "rung_cases": 1}}]}
    path = write(tmp_path, space)
    base = yaml.safe_load((tmp_path / "base.yaml").read_text())
    base["train"].update(space["train"])  # the study's own run is then a point of the space
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    assert main(["run", str(tmp_path / "base.yaml"), "--scale", "smoke", "-v", "0"]) == 0
    assert main(["search", str(path), "-v", "0"]) == 0
    assert "1 finished runs of tiny_base added as complete trials" in capsys.readouterr().out
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna" / "tiny.journal")))
    state = optuna.trial.TrialState
    for name, n in (("tiny", 2), ("tiny.random", 2), ("tiny.halving", 3)):  # the 3 points beside the warm one
        trials = optuna.load_study(study_name=name, storage=storage).get_trials()
        warm = [t for t in trials if "warm_start_run" in t.user_attrs]
        assert len(warm) == 1 and warm[0].params == {"insert": "CSC", "widths": "[4, 4, 8, 8, 8]"}
        ran = [t for t in trials if "warm_start_run" not in t.user_attrs and t.state in (state.COMPLETE, state.PRUNED)
               and "trial_time_s" in t.user_attrs]
        assert len(ran) == n and len({str(t.params) for t in ran}) == n  # none trained twice
    halving = optuna.load_study(study_name="tiny.halving", storage=storage).get_trials()
    stopped = [t for t in halving if t.state == state.PRUNED and "epochs" in t.user_attrs]
    assert stopped and all(t.user_attrs["epochs"] in (1, 2) for t in stopped)
    from harness.search import SamplerCfg, make_sampler

    nsga2 = optuna.load_study(study_name="tiny", storage=storage, sampler=make_sampler(SamplerCfg(**SPACE["sampler"]), True))
    warm = [t for t in nsga2.get_trials() if "warm_start_run" in t.user_attrs][0]
    assert nsga2.sampler.get_trial_generation(nsga2, warm) == 0  # the genetic sampler's first generation
    out = tmp_path / "reports" / "local" / "tiny"
    text = (out / "pareto.md").read_text()
    assert "## Search strategies: hypervolume against trial-time" in text and (out / "hypervolume.png").exists()
    assert "cost-aware ASHA, eta 2, rungs at epochs [1, 2] on 1 cases" in text
    import pandas as pd

    csv = pd.read_csv(out / "strategies.csv")
    assert set(csv.strategy) == {"tiny", "tiny.random", "tiny.halving"} and (csv.hypervolume >= 0).all()
    assert (csv.groupby("strategy").trial_time_min.diff().dropna() >= 0).all()  # time only accumulates
    assert main(["search", str(path), "--resume", "-v", "0"]) == 0
    said = capsys.readouterr().out
    assert "tiny.halving: 3 trials run" in said and "0 to run" in said and "added" not in said


def test_constraints_keep_missing_trials_off_the_front_and_reach_the_sampler(tmp_path):
    from optuna.distributions import CategoricalDistribution
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import create_trial

    from harness.pareto import constraint_values
    from harness.search import make_sampler, write_pareto
    from harness.tune import FreshOptunaSearch

    assert constraint_values([("mean_dice", 50, None), ("gmacs", None, 2.0)], {"mean_dice": 40.0, "gmacs": 1.5}) \
        == [10.0, -0.5]
    space = Space(write(tmp_path, {**SPACE, "knobs": {"insert": {"choice": ["CSC", "CCS", "CSCS"]}},
                                   "constraints": [{"metric": "mean_dice", "min": 50}]}))
    sampler = make_sampler(space.cfg.sampler, space.conditional, constrained=True)
    assert sampler._constraints_func is not None
    study = optuna.create_study(directions=["maximize", "minimize"])
    dist = {"insert": CategoricalDistribution(["CSC", "CCS", "CSCS"])}
    for insert, dice, gmacs in (("CSC", 60.0, 2.0), ("CCS", 40.0, 0.5), ("CSCS", 55.0, 3.0)):
        study.add_trial(create_trial(params={"insert": insert}, distributions=dist, values=[dice, gmacs],
                                     user_attrs={"constraints": constraint_values(space.cfg.bounds(), {"mean_dice": dice})}))
    out = write_pareto(space, study, tmp_path / "out")
    names = [v["name"] for v in yaml.safe_load((out / "pareto_variants.yaml").read_text())["variants"]]
    assert names == ["search_tiny_t000"]  # CCS is cheaper but below the Dice floor; CSCS is dominated
    assert "Constraints: mean_dice >= 50; 2 of 3 trials meet them" in (out / "pareto.md").read_text()
    # The searcher stores each finished trial's values before telling Optuna (constraints_func reads them).
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "s.journal")))

    def knobs(trial):
        trial.suggest_categorical("a", [1, 2])

    searcher = FreshOptunaSearch(space=knobs, metric=["m", "n"], mode=["max", "min"], storage=storage,
                                      sampler=optuna.samplers.RandomSampler(seed=0), study_name="s")
    searcher.bounds = [("m", 0.5, None)]
    searcher.suggest("t0")
    searcher.on_trial_complete("t0", {"m": 0.2, "n": 1.0, "final": 1, "time_total_s": 1.0})
    (trial,) = optuna.load_study(study_name="s", storage=storage).trials
    assert trial.user_attrs["constraints"] == pytest.approx([0.3])


def test_a_front_point_holds_only_when_it_surely_beats_every_cheaper_one(tmp_path, monkeypatch):
    # Three points: the cheapest holds; one surely better than it holds; one within noise does not.
    import harness.report
    import harness.search
    import harness.study
    from harness.report.runs import StudyRuns
    from harness.search import confirm_front

    space = Space(write(tmp_path))
    out = tmp_path / "out"
    out.mkdir()
    names = ["search_tiny_t000", "search_tiny_t001", "search_tiny_t002"]
    (out / "pareto_variants.yaml").write_text(yaml.safe_dump({"variants": [
        {"name": n, "params": {"insert": i}} for n, i in zip(names, ["CSC", "CCS", "CSCS"])]}))
    rng = np.random.default_rng(0)
    level = {names[0]: 50.0, names[1]: 70.0, names[2]: 70.3}  # t002 costs more than t001, gains noise
    cost = {names[0]: 1.0, names[1]: 2.0, names[2]: 3.0}
    cases = pd.DataFrame([{"variant": n, "seed": s, "case": c, "mean_dice": level[n] + rng.normal(0, 2)}
                          for n in names for s in range(3) for c in range(8)])
    trials = pd.DataFrame([{"variant": n, "seed": s, "gmacs": cost[n]} for n in names for s in range(3)])
    monkeypatch.setattr(harness.study, "run_studies", lambda *a, **k: 0)
    monkeypatch.setattr(harness.report, "load_runs", lambda *a, **k: StudyRuns(None, "smoke", trials, per_case=cases))
    confirm_front(space, out, 3, None, None, 0)
    rows = {ln.split("|")[1].strip(): ln for ln in (out / "confirm.md").read_text().splitlines() if ln.startswith("| t")}
    assert "True" in rows["t000"] and "the cheapest" in rows["t000"]
    assert "True" in rows["t001"] and "beats every cheaper point" in rows["t001"]
    assert "False" in rows["t002"] and "not surely better than t001" in rows["t002"]


def test_seeds_md_puts_each_seed_of_a_comparison_side_by_side(tmp_path):
    """``--seed N`` names the search ``<name>-seed<N>`` with every sampler at N; ``seeds.md``
    reads each repetition's ``strategies.csv``: final hypervolume over seeds, its difference
    from the main search's at the same seed, and the share of the main search's trial-time a
    strategy took to reach that search's final hypervolume."""
    import pandas as pd

    from harness.search.outputs import write_seeds

    path = write(tmp_path, {**SPACE, "compare": [{"name": "random", "sampler": {"name": "random", "seed": 5}}]})
    space = Space(path, seed=2)
    assert space.cfg.name == "tiny-seed2" and space.family == "tiny"
    assert [s.cfg.sampler.seed for _, s in space.strategies()] == [2, 2]
    reports = tmp_path / "reports"
    for seed, (main_hv, other_hv) in enumerate([((1, 3, 4), (2, 5, 5)), ((2, 2, 6), (1, 3, 3))]):
        rows = [{"strategy": f"tiny-seed{seed}", "trial_time_min": t, "hypervolume": h} for t, h in zip((1, 2, 4), main_hv)]
        rows += [{"strategy": f"tiny-seed{seed}.random", "trial_time_min": t, "hypervolume": h}
                 for t, h in zip((1, 3, 5), other_hv)]
        (reports / f"tiny-seed{seed}").mkdir(parents=True)
        pd.DataFrame(rows).to_csv(reports / f"tiny-seed{seed}" / "strategies.csv", index=False)
    out = write_seeds(space, reports)
    per = pd.read_csv(out / "seeds.csv").set_index(["seed", "strategy"])
    assert per.loc[(0, "random"), "minus_main"] == 1 and per.loc[(1, "random"), "minus_main"] == -3
    assert per.loc[(0, "random"), "share_to_main_final"] == 3 / 4  # reached 4 after 3 of the main's 4 minutes
    assert pd.isna(per.loc[(1, "random"), "share_to_main_final"])  # never reached 6
    text = (out / "seeds.md").read_text()
    assert "| random" in text and "1 of 2" in text and "-1.000 ± 2.828" in text and (out / "seeds.png").exists()
