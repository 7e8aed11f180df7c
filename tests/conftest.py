import os

import pytest

os.environ.setdefault("KINETO_LOG_LEVEL", "5")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # Synthetic data is cached per test session, never in the user's home.
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
