"""Parameter-free and sampling ops that give networks 3D context."""
from harness.ops.group_shift import GroupShift, group_shift

__all__ = ["GroupShift", "group_shift"]
