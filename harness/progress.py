"""Progress of a command's trials: a live table on a terminal (rich), one line per event elsewhere.

The board is fed events (``phase``, ``plan``, ``start``, ``beat``, ``settle``) by whoever runs
the trials (``harness.tune.MlflowWriter``) and owns no Ray or MLflow import. Its ETA comes from
measured step times only (``estimate_eta``): none is shown before a trial has reported steps.
"""
from __future__ import annotations

import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable


MIN_STEPS = 3


@dataclass
class TrialView:
    """One trial as the board shows it. ``work``: a relative size of one training step (e.g. its
    forward MACs), used to carry a measured step time over to trials not yet started."""
    key: str
    label: str
    steps: int
    epochs: int
    work: float | None = None
    started: float | None = None
    ended: float | None = None
    step: int = 0
    epoch: int = 0
    loss: float | None = None
    train_s: float = 0.0  # seconds spent in training steps so far
    build_s: float | None = None  # seconds from the trial's start to its first step
    outcome: str = ""  # "", done, FAILED, stopped
    result: str = ""
    history: list[str] = field(default_factory=list)

    @property
    def step_time(self) -> float | None:
        """Seconds per step so far; None before ``MIN_STEPS`` (one step's time is mostly warm-up)."""
        return self.train_s / self.step if self.step >= min(MIN_STEPS, self.steps or MIN_STEPS) else None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def estimate_eta(trials: list[TrialView], now: float, slots: int, unseen: int = 0) -> float | None:
    """Seconds until every trial has settled, from measured step times; None before any.

    A trial's step time is its own once measured; else its peers' with the same ``work`` (the
    same architecture and patch), else the median of the measured seconds per unit of work
    times its own work (or the median step time when work is unknown). Time outside training
    steps (building, validation, cost) is the median of what the finished trials spent so, else
    what the running ones spent before their first step. The pending trials are then placed in
    order on ``slots`` workers as they free up (Ray's order), and the ETA is when the last ends.
    ``unseen`` trials not yet proposed (a search's) each take the median of the known trials' time.
    """
    measured = [t for t in trials if t.step_time is not None]
    if not measured:
        return None
    by_work: dict[float | None, list[float]] = {}
    for t in measured:
        by_work.setdefault(t.work, []).append(t.step_time)
    per_work = _median([t.step_time / t.work for t in measured if t.work])
    any_step = _median([t.step_time for t in measured])
    done = [t for t in trials if t.outcome == "done" and t.started is not None and t.ended is not None and t.step]
    overhead = _median([max(0.0, (t.ended - t.started) - t.train_s) for t in done])
    if overhead is None:
        overhead = _median([t.build_s for t in trials if t.build_s is not None]) or 0.0

    def step_time(t: TrialView) -> float:
        if t.step_time is not None:
            return t.step_time
        if t.work in by_work and t.work is not None:
            return statistics.median(by_work[t.work])
        return per_work * t.work if per_work is not None and t.work else any_step

    running = [t for t in trials if t.started is not None and not t.outcome]
    pending = [t for t in trials if t.started is None and not t.outcome]
    free = []
    for t in running:
        spent_outside = (now - t.started) - t.train_s
        free.append(max(0.0, (t.steps - t.step) * step_time(t)) + max(0.0, overhead - spent_outside))
    free += [0.0] * max(0, max(1, slots) - len(free))
    free.sort()
    whole = [t.steps * step_time(t) + overhead for t in trials]
    for took in [t.steps * step_time(t) + overhead for t in pending] + [statistics.median(whole)] * unseen:
        free[0] += took
        free.sort()
    return max(free) if free else 0.0


def mmss(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


class Board:
    """The trials of one run: a live rich table when ``live`` (default: stdout is a terminal),
    else one line per event. ``verbose`` 0 prints nothing; 2 leaves the screen to Ray's own
    tables (plain lines only). ``clock`` is injectable for tests."""

    def __init__(self, title: str, verbose: int = 1, live: bool | None = None, slots: int = 1,
                 expected: int = 0, clock: Callable[[], float] = time.monotonic, out=None):
        """``expected``: the trials to run when they are not all planned up front (a search's)."""
        self.title, self.verbose, self.slots, self.clock = title, verbose, max(1, slots), clock
        self.expected = expected
        self.out = out or sys.stdout
        self.live_mode = verbose == 1 and (live if live is not None else self.out.isatty())
        self.trials: dict[str, TrialView] = {}
        self.order: list[str] = []  # settled, in order
        self.status = ""
        self.t0 = clock()
        self._lock = threading.RLock()
        self._live = None
        self._eta_said = False

    def __getstate__(self) -> dict:
        # Ray Tune pickles its callbacks (the MLflow writer holds the board) into its experiment
        # state; the copy keeps the trials, not the screen, the lock or the stream.
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_live", "out")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.RLock(), _live=None, out=sys.stdout)

    # -- the events ---------------------------------------------------------------------------
    def __enter__(self) -> "Board":
        if self.live_mode:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(get_renderable=self._render, console=Console(file=self.out), refresh_per_second=2,
                              transient=False, redirect_stdout=True, redirect_stderr=True)
            self._live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self.status = ""
            self._live.refresh()
            self._live.stop()
            self._live = None

    def phase(self, text: str) -> None:
        """A step before or between trials (validating, generating data, starting Ray)."""
        with self._lock:
            self.status = text
        if not self.live_mode and self.verbose == 1:
            self._print(f"  {text}")

    def plan(self, key: str, label: str, steps: int, epochs: int, work: float | None = None) -> None:
        """A trial to come, so that the ETA counts it before it starts."""
        with self._lock:
            self.trials.setdefault(key, TrialView(key, label, steps, epochs, work))

    def start(self, key: str, label: str | None = None) -> None:
        with self._lock:
            t = self.trials.setdefault(key, TrialView(key, label or key, 0, 0))
            t.label = label or t.label
            t.started, t.ended, t.outcome, t.step, t.train_s, t.build_s = self.clock(), None, "", 0, 0.0, None
            self.status = ""

    def beat(self, key: str, step: int, epoch: int, loss: float | None, train_s: float, build_s: float,
             steps: int | None = None) -> None:
        """A running trial's progress: ``step`` steps done of its ``steps``, ``train_s`` seconds in
        them, ``build_s`` seconds before its first."""
        with self._lock:
            t = self.trials.get(key)
            if t is None or t.outcome:
                return
            if t.started is None:
                t.started = self.clock() - build_s - train_s
            t.step, t.epoch, t.loss, t.train_s, t.build_s = step, epoch, loss, train_s, build_s
            t.steps = steps or t.steps
            first = not self._eta_said and not self.live_mode and self.verbose == 1 and t.step_time is not None
            self._eta_said = self._eta_said or first
        if first:  # off a terminal, the first measured ETA is said once (the live table shows it always)
            eta = self.eta()
            self._print(f"  first steps measured ({t.label}: {t.step_time:.2f} s/step): ETA {mmss(eta)}")

    def settle(self, key: str, outcome: str, result: str = "", why: str = "") -> None:
        """A trial's end: ``done`` (``result``: its metric), ``FAILED`` (``why``) or ``stopped``."""
        with self._lock:
            t = self.trials.setdefault(key, TrialView(key, key, 0, 0))
            t.outcome, t.result, t.ended = outcome, result or why, self.clock()
            if t.started is None:
                t.started = t.ended
            self.order.append(key)
            line = self._settled_line(t, why)
        if self.verbose == 1 and not self.live_mode:
            self._print(line)
        elif self._live is not None:
            self._live.console.print(line, soft_wrap=True, markup=False, highlight=False)

    def note(self, text: str) -> None:
        """A one-off line (a retried worker)."""
        if self.verbose == 1 and self._live is not None:
            self._live.console.print(text, soft_wrap=True, markup=False, highlight=False)
        elif self.verbose == 1:
            self._print(text)

    # -- what is shown ------------------------------------------------------------------------
    def counts(self) -> tuple[int, int, int, int]:
        """(settled, failed, stopped, running)."""
        ts = self.trials.values()
        return (sum(1 for t in ts if t.outcome), sum(1 for t in ts if t.outcome == "FAILED"),
                sum(1 for t in ts if t.outcome == "stopped"), sum(1 for t in ts if t.started is not None and not t.outcome))

    @property
    def total(self) -> int:
        return max(self.expected, len(self.trials))

    def eta(self) -> float | None:
        with self._lock:
            return estimate_eta(list(self.trials.values()), self.clock(), self.slots,
                                max(0, self.expected - len(self.trials)))

    def _settled_line(self, t: TrialView, why: str) -> str:
        settled, failed, stopped, running = self.counts()
        total = self.total
        eta = self.eta() if settled < total else None
        took = (t.ended or self.clock()) - (t.started or self.t0)
        result = f"  {t.result}" if t.result and t.outcome == "done" else ""
        return (f"[{settled:>{len(str(total))}}/{total}] {t.outcome:<6} {t.label}{result}  ({mmss(took)}; "
                f"{failed} failed, " + (f"{stopped} stopped, " if stopped else "") + f"{running} running"
                + (f", ETA {mmss(eta)}" if eta is not None else "") + ")" + (f"\n    {why}" if why else ""))

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def _render(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            settled, failed, stopped, running = self.counts()
            eta = self.eta()
            elapsed = f"elapsed {mmss(self.clock() - self.t0)}"
            head = Text(f"{self.title}: {settled}/{self.total} settled, {running} running, {failed} failed"
                        + (f", {stopped} stopped" if stopped else "") + f"; {elapsed}, "
                        + (f"ETA {mmss(eta)}" if eta is not None else "ETA after the first steps")
                        if self.total else f"{self.title}: {elapsed}", style="bold")
            table = Table(box=None, pad_edge=False, show_edge=False)
            for col in ("trial", "epoch", "step", "loss", "s/step", "time"):
                table.add_column(col, justify="left" if col == "trial" else "right")
            now = self.clock()
            for t in self.trials.values():
                if t.started is None or t.outcome:
                    continue
                table.add_row(t.label, f"{t.epoch + 1}/{t.epochs}" if t.epochs else "",
                              f"{t.step}/{t.steps}" if t.steps else "", "" if t.loss is None else f"{t.loss:.4f}",
                              "" if t.step_time is None else f"{t.step_time:.2f}", mmss(now - t.started))
            parts = [head] + ([table] if running else []) + ([Text(self.status, style="dim")] if self.status else [])
        return Group(*parts)
