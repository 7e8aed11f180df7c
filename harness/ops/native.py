"""Plain C kernels built on first use with the system compiler (``$CC``, else ``cc``) and
loaded with ``ctypes``: no Python or torch headers, so a build takes under a second. An op with
such a kernel keeps, per shape, the fastest of its exact realisations (``fastest``).

Built once into ``$HARNESS_CACHE`` (default ``~/.cache/harness``), named by a hash of the source,
the command, the compiler's own version line and the CPU (machine and instruction-set flags: a
home shared by a cluster's nodes may mix them). One process builds, under a file lock, while the
others wait for its library; a failed build is recorded beside it (``<name>.failed``, the
compiler's message) so that the message is shown once and no later worker compiles it again.

The layer (these kernels, the batch-1 convolution route, Group Shift's realisation race) was
tested on the torch versions in ``TESTED_TORCH``: on another it is off unless
``HARNESS_CPU_KERNELS=1`` asks for it (``=0``: off everywhere).
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import subprocess
import sysconfig
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import torch
from filelock import FileLock

log = logging.getLogger(__name__)

TESTED_TORCH = ("2.13",)  # major.minor versions the suite ran the layer on (bit-for-bit tests)


def enabled() -> bool:
    """The CPU acceleration layer's one switch: ``HARNESS_CPU_KERNELS=0`` turns off the C kernels,
    the batch-1 convolution route and Group Shift's realisation race, leaving plain PyTorch;
    unset, the layer is on for a torch in ``TESTED_TORCH`` only; ``=1`` forces it on."""
    flag = os.environ.get("HARNESS_CPU_KERNELS", "")
    return flag != "0" and (flag == "1" or _tested(torch.__version__))


@lru_cache(maxsize=None)
def _tested(version: str) -> bool:
    ok = ".".join(version.split("+")[0].split(".")[:2]) in TESTED_TORCH
    if not ok:
        log.warning("harness CPU kernels are off: tested on torch %s, this is torch %s (HARNESS_CPU_KERNELS=1 "
                    "turns them on)", ", ".join(TESTED_TORCH), version)
    return ok


def compiler() -> str:
    return os.environ.get("CC", "cc")


class BuildError(subprocess.SubprocessError):
    """A kernel did not build. ``fresh``: this call ran the compiler (its message not shown
    before); else the failure was recorded by an earlier build (in ``record``)."""

    def __init__(self, message: str, record: Path, fresh: bool):
        super().__init__(message)
        self.message, self.record, self.fresh = message, record, fresh


@lru_cache(maxsize=None)
def _compiler_version(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.splitlines()[0] if out else "unknown"


@lru_cache(maxsize=1)
def _cpu() -> str:
    """The machine and its instruction-set flags (Linux's ``/proc/cpuinfo``; elsewhere the
    processor's name)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith(("flags", "Features")))
    except (OSError, StopIteration):
        flags = platform.processor()
    return f"{platform.machine()} {flags}"


def build(command: list[str], cache: Path, source: Path) -> Path:
    """The library ``command`` builds from ``source``, compiled once into ``cache``; raises
    ``BuildError`` when the compiler refuses it (now or at an earlier, recorded attempt)."""
    key = "\0".join([_cpu(), _compiler_version(command[0]), *command])
    tag = hashlib.sha256(source.read_bytes() + key.encode()).hexdigest()[:16]
    lib = cache / f"{source.stem}-{tag}{sysconfig.get_config_var('SHLIB_SUFFIX') or '.so'}"
    if lib.exists():
        return lib
    cache.mkdir(parents=True, exist_ok=True)
    failed = lib.with_name(f"{lib.name}.failed")
    with FileLock(lib.with_name(f"{lib.name}.lock"), thread_local=False):  # concurrent workers: one compiles, the rest wait
        if lib.exists():
            return lib
        if failed.exists():
            raise BuildError(failed.read_text(), failed, fresh=False)
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        try:
            done = subprocess.run([*command, "-o", str(tmp)], capture_output=True, text=True, timeout=120)
        except OSError as e:  # no compiler at all
            done = subprocess.CompletedProcess(command, 127, "", str(e))
        if done.returncode != 0:
            message = f"{' '.join(command)} exited {done.returncode}: {(done.stderr or done.stdout).strip()[-2000:]}"
            failed.write_text(message)
            raise BuildError(message, failed, fresh=True)
        os.replace(tmp, lib)
    return lib


def unavailable(op: str, error: BuildError) -> None:
    """Say once that ``op`` runs on PyTorch's kernels because its C kernel did not build: the
    compiler's message when this process ran it, a debug line when an earlier one did."""
    if error.fresh:
        log.warning("%s: no compiled kernel, using PyTorch's (recorded in %s; remove it to try again): %s",
                    op, error.record, error.message)
    else:
        log.debug("%s: no compiled kernel (%s)", op, error.record)


def fastest(methods: list[str], run: Callable[[str], object], sync: Callable[[], None] | None = None,
            clock: Callable[[], float] = time.perf_counter) -> str:
    """The fastest of ``methods`` by ``run(method)``: the least time of alternated runs after a
    warm-up of each (``sync`` waits for a device, e.g. CUDA's queue, around each run; ``clock``
    is injectable so that the policy is tested without real time).

    Rounds fill about 50 ms (3 to 15): a small tensor's sub-millisecond times need more samples
    on a noisy machine than a paper-scale one's, which cannot afford them. The least, not the
    median: interference only slows a run, and on a shared machine it hit medians hard enough to
    keep Group Shift's box copies at 8x its kernel's time.
    """
    times: dict[str, list[float]] = {m: [] for m in methods}
    rounds, r = 3, 0
    while r <= rounds:
        for m in methods:
            if sync:
                sync()
            t0 = clock()
            run(m)
            if sync:
                sync()
            times[m].append(clock() - t0)
        if r == 0:  # the warm-up round sets the budget and is not counted
            rounds = max(3, min(15, int(0.05 / max(sum(ts[0] for ts in times.values()), 1e-9))))
            times = {m: [] for m in methods}
        r += 1
    return min(methods, key=lambda m: min(times[m]))
