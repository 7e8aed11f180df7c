"""Data sets, created by name through ``DATASETS`` (importing this registers them)."""
from harness.data import folders, synthetic, transforms  # noqa: F401  (registration)
from harness.data.task import Case, Task
from harness.registry import DATASETS

__all__ = ["Case", "Task", "DATASETS", "build_task"]


def build_task(name: str, **params) -> Task:
    return DATASETS.get(name, field="data.dataset")(**params)
