"""The progress board: ETA from measured step times only, plain lines off a terminal, a live
table on one. A fake clock drives every test: no real time, so a loaded machine changes nothing."""
import io

import pytest

from harness.progress import Board, TrialView, estimate_eta


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_no_eta_before_any_step_is_measured():
    trials = [TrialView("a", "a", 100, 2), TrialView("b", "b", 100, 2)]
    trials[0].started = 0.0
    assert estimate_eta(trials, now=5.0, slots=2) is None


def test_eta_places_pending_trials_on_free_slots_in_order():
    # a runs (10 of 100 steps at 0.5 s), b and c wait, each of a's work; 2 slots.
    a, b, c = (TrialView(k, k, 100, 2, work=1.0) for k in "abc")
    a.started, a.step, a.train_s, a.build_s = 0.0, 10, 5.0, 0.0
    # Slot 1: a's 90 steps left (45 s), then c (50 s); slot 2: b (50 s). Overhead 0 (a's build).
    assert estimate_eta([a, b, c], now=5.0, slots=2) == pytest.approx(95.0)
    # One slot: 45 + 50 + 50.
    assert estimate_eta([a, b, c], now=5.0, slots=1) == pytest.approx(145.0)


def test_a_measured_step_time_carries_over_by_work():
    # b has twice a's work per step and has not started: 2 x a's measured seconds per unit of work.
    a, b = TrialView("a", "a", 10, 1, work=1.0), TrialView("b", "b", 10, 1, work=2.0)
    a.started, a.step, a.train_s, a.build_s = 0.0, 10, 10.0, 0.0
    a.outcome, a.ended = "done", 10.0
    assert estimate_eta([a, b], now=10.0, slots=1) == pytest.approx(20.0)


def test_time_outside_steps_is_taken_from_finished_trials():
    # a finished: 20 steps at 1 s in a 30 s trial, so 10 s outside its steps (build, validation, cost).
    a, b = TrialView("a", "a", 20, 1, work=1.0), TrialView("b", "b", 20, 1, work=1.0)
    a.started, a.step, a.train_s, a.outcome, a.ended = 0.0, 20, 20.0, "done", 30.0
    assert estimate_eta([a, b], now=30.0, slots=1) == pytest.approx(30.0)


def test_unseen_search_trials_take_the_median_trial():
    a = TrialView("a", "a", 10, 1)
    a.started, a.step, a.train_s, a.build_s = 0.0, 5, 5.0, 0.0
    # a: 5 s left; 3 trials not yet proposed, 10 s each, on 2 slots -> 5 + 10 = 15 and 10 + 10 = 20.
    assert estimate_eta([a], now=5.0, slots=2, unseen=3) == pytest.approx(20.0)


def test_plain_lines_off_a_terminal():
    out, clock = io.StringIO(), Clock()
    with Board("s @ smoke", verbose=1, live=False, slots=1, clock=clock, out=out) as board:
        board.phase("starting a local Ray instance")
        board.plan("s/a#s0", "a#s0", 10, 2, 1.0)
        board.plan("s/b#s0", "b#s0", 10, 2, 1.0)
        board.start("s/a#s0")
        clock.now = 4.0
        board.beat("s/a#s0", step=4, epoch=0, loss=0.7, train_s=4.0, build_s=0.0, steps=10)
        clock.now = 12.0
        board.beat("s/a#s0", step=10, epoch=1, loss=0.5, train_s=10.0, build_s=0.0, steps=10)  # its final numbers
        board.settle("s/a#s0", "done", "Dice 71.2")
        board.start("s/b#s0")
        clock.now = 13.0
        board.settle("s/b#s0", "FAILED", why="FloatingPointError: non-finite training loss")
    lines = out.getvalue().splitlines()
    assert lines[0] == "  starting a local Ray instance"
    # The first beat: a has 6 steps left at 1 s, then b's 10 (no time outside steps known yet).
    assert lines.pop(1) == "  first steps measured (a#s0: 1.00 s/step): ETA 0m16s"
    # a: 12 s in all, 10 in steps, so 2 s outside; b then needs 10 x 1 s + 2 s.
    assert lines[1] == "[1/2] done   a#s0  Dice 71.2  (0m12s; 0 failed, 0 running, ETA 0m12s)"
    assert lines[2] == "[2/2] FAILED b#s0  (0m01s; 1 failed, 0 running)"
    assert lines[3] == "    FloatingPointError: non-finite training loss"
    assert len(lines) == 4  # beats draw nothing off a terminal


def test_verbose_0_prints_nothing():
    out = io.StringIO()
    with Board("s", verbose=0, live=False, out=out) as board:
        board.phase("x")
        board.plan("k", "k", 1, 1)
        board.start("k")
        board.settle("k", "done", "Dice 1.0")
    assert out.getvalue() == ""


def test_live_table_shows_running_trials_with_epoch_step_loss_and_eta():
    out, clock = io.StringIO(), Clock()
    board = Board("gsp_table1 @ quick", verbose=1, live=True, slots=2, clock=clock, out=out)
    board.plan("s/a#s0", "3D FCN#s0", 150, 3, 2.0)
    board.plan("s/b#s0", "PW#s0", 150, 3, 1.0)
    board.start("s/a#s0")
    clock.now = 10.0
    board.beat("s/a#s0", step=20, epoch=0, loss=0.61234, train_s=8.0, build_s=2.0, steps=150)
    from rich.console import Console

    console = Console(file=io.StringIO(), width=120)
    console.print(board._render())
    screen = console.file.getvalue()
    assert "gsp_table1 @ quick: 0/2 settled, 1 running" in screen and "ETA" in screen
    assert "3D FCN#s0" in screen and "1/3" in screen and "20/150" in screen and "0.6123" in screen
    assert "PW#s0" not in screen  # not started: counted in the ETA, not drawn


def test_live_board_starts_and_prints_settled_lines_above(monkeypatch):
    out, clock = io.StringIO(), Clock()
    with Board("t", verbose=1, live=True, clock=clock, out=out) as board:
        board.plan("k", "v#s0", 2, 1)
        board.start("k")
        board.settle("k", "done", "Dice 50.0")
    assert "[1/1] done   v#s0  Dice 50.0" in out.getvalue()


def test_the_board_pickles_as_ray_tune_keeps_its_callbacks():
    import pickle

    with Board("t", verbose=1, live=True, out=io.StringIO()) as board:
        board.plan("k", "v#s0", 2, 1)
        copy = pickle.loads(pickle.dumps(board))
    assert copy.trials["k"].label == "v#s0" and copy._live is None
