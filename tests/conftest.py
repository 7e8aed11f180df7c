import os
import sys

import pytest

os.environ.setdefault("KINETO_LOG_LEVEL", "5")
# Under pytest-xdist each worker's Ray instances (in-process and in the commands it starts) get
# their share of the cores: on 2 cores with 2 workers, one trial at a time each, so a study's
# trials reuse one actor instead of importing torch and MONAI in a second (~10 CPU-s each).
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("RAY_OVERRIDE_RESOURCES", '{"CPU": %d}' % max(
        1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # Synthetic data is cached per test session, never in the user's home.
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True)
def _fast_lane(request, monkeypatch):
    # `pytest -m "not slow"` is the fast lane: a test that starts a Python process (a harness
    # command, a script) or Ray is marked slow, and this fails it where it is not. A C compiler
    # building a CPU kernel is allowed: it runs once per cache.
    if request.node.get_closest_marker("slow") is not None:
        return
    import subprocess

    real = subprocess.Popen.__init__

    def guarded(self, args, *a, **k):
        first = os.fspath(args if isinstance(args, (str, os.PathLike)) else args[0])
        if os.path.basename(first).startswith("python") or first == sys.executable or f"{os.sep}ray{os.sep}" in first:
            raise AssertionError(f"{request.node.nodeid} starts {first}: mark it @pytest.mark.slow (the fast "
                                 f"lane, -m 'not slow', starts no process)")
        real(self, args, *a, **k)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(folder)``: from then on every write under ``folder`` fails as on a read-only
    folder (EACCES with the path). The suite runs as root, whom ``chmod`` does not stop."""
    import builtins
    import errno
    import io

    real_open, real_mkdir, real_os_open = builtins.open, os.mkdir, os.open
    folders = []

    def inside(path) -> bool:
        p = os.path.realpath(os.fspath(path))
        return any(p == f or p.startswith(f + os.sep) for f in folders)

    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))

    def _open(file, mode="r", *a, **k):
        if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+") and inside(file):
            refuse(file)
        return real_open(file, mode, *a, **k)

    def _mkdir(path, *a, **k):
        if inside(path):
            refuse(path)
        return real_mkdir(path, *a, **k)

    def _os_open(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            refuse(path)
        return real_os_open(path, flags, *a, **k)

    for target, name, fn in ((builtins, "open", _open), (io, "open", _open), (os, "mkdir", _mkdir),
                             (os, "open", _os_open)):
        monkeypatch.setattr(target, name, fn)
    return lambda folder: folders.append(os.path.realpath(folder))


@pytest.fixture
def tiny_study():
    """A one-variant study of a tiny pointwise GSP net at smoke (``helpers.BASE``), a fresh copy."""
    import copy

    from helpers import BASE

    return copy.deepcopy(BASE)
