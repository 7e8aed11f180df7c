"""Parameter-free and sampling ops that give networks 3D context."""
from harness.ops.depth_shift import DistillDSM, ResidualDSM, shift_slices
from harness.ops.group_shift import GroupShift, group_shift

__all__ = ["DistillDSM", "GroupShift", "ResidualDSM", "group_shift", "shift_slices"]
