"""``--data-root``'s one parser (``TASK=PATH`` or ``PATH``), light enough for the command line
to check the folder before the study and its libraries load."""
from __future__ import annotations

import re
from pathlib import Path

TASK_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def split_data_root(item: str) -> tuple[str | None, str]:
    """``TASK=PATH`` -> (TASK, PATH); a plain ``PATH``, or an existing path that holds '='
    (``/data/run=3``), -> (None, PATH)."""
    name, sep, path = item.partition("=")
    if sep and TASK_NAME.fullmatch(name) and not Path(item).exists():
        return name, path
    return None, item
