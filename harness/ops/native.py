"""Plain C kernels built on first use with the system compiler (``$CC``, else ``cc``) and
loaded with ``ctypes``: no Python or torch headers, so a build takes under a second. An op with
such a kernel keeps, per shape, the fastest of its exact realisations (``fastest``).

Built once per source version into ``$HARNESS_CACHE`` (default ``~/.cache/harness``), named by a
hash of the source, the command and the machine (a home shared by a cluster's nodes may mix them).
"""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path


def enabled() -> bool:
    """The CPU acceleration layer's one switch: ``HARNESS_CPU_KERNELS=0`` turns off the C kernels,
    the batch-1 convolution route and Group Shift's realisation race, leaving plain PyTorch."""
    return os.environ.get("HARNESS_CPU_KERNELS", "1") != "0"


def compiler() -> str:
    return os.environ.get("CC", "cc")


def build(command: list[str], cache: Path, source: Path) -> Path:
    """The library ``command`` builds from ``source``, compiled once into ``cache``."""
    tag = hashlib.sha256(source.read_bytes() + " ".join([platform.machine(), *command]).encode()).hexdigest()[:16]
    lib = cache / f"{source.stem}-{tag}{sysconfig.get_config_var('SHLIB_SUFFIX') or '.so'}"
    if not lib.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")  # concurrent workers: build apart, rename atomically
        subprocess.run([*command, "-o", str(tmp)], check=True, capture_output=True, timeout=120)
        os.replace(tmp, lib)
    return lib


def fastest(methods: list[str], run: Callable[[str], object], sync: Callable[[], None] | None = None) -> str:
    """The fastest of ``methods`` by ``run(method)``: the least time of alternated runs after a
    warm-up of each (``sync`` waits for a device, e.g. CUDA's queue, around each run).

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
            t0 = time.perf_counter()
            run(m)
            if sync:
                sync()
            times[m].append(time.perf_counter() - t0)
        if r == 0:  # the warm-up round sets the budget and is not counted
            rounds = max(3, min(15, int(0.05 / max(sum(ts[0] for ts in times.values()), 1e-9))))
            times = {m: [] for m in methods}
        r += 1
    return min(methods, key=lambda m: min(times[m]))
