"""Parameter-free and sampling ops that give networks 3D context."""
from harness.ops.depth_shift import DistillDSM, ResidualDSM, shift_slices
from harness.ops.group_shift import GroupShift, group_shift
from harness.ops.obelisk import Obelisk, regular_grid

__all__ = ["DistillDSM", "GroupShift", "Obelisk", "ResidualDSM", "group_shift", "regular_grid", "shift_slices"]
