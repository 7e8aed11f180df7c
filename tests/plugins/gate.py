"""``test_gate``: a callback that holds its trial before the first step until a file exists, so
that a test kills a run while trials are certainly in flight, on a machine of any speed and
without a wall-clock deadline (the gate opens when the test creates the file)."""
from __future__ import annotations

import os
import time

from harness.callbacks import Callback
from harness.registry import CALLBACKS


@CALLBACKS.register("test_gate")
class Gate(Callback):
    def __init__(self, file: str):
        self.file = file

    def on_train_start(self, ctx) -> None:
        while not os.path.exists(self.file):
            time.sleep(0.05)
