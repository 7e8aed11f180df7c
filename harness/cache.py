"""Where the harness keeps what it can rebuild: generated data sets, preprocessed folders,
compiled kernels (``$HARNESS_CACHE``, default ``~/.cache/harness``)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness"))
