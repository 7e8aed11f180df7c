"""Ops and blocks that give networks 3D context."""
from harness.ops.cbam import CBAM3d
from harness.ops.context_residual import ContextResidualModule, WSConv3d, context_residual, slice_residual
from harness.ops.conv import Conv3d, conv3d, onednn_convs
from harness.ops.depth_shift import DistillDSM, ResidualDSM, shift_slices
from harness.ops.group_shift import GroupShift, group_shift
from harness.ops.obelisk import Obelisk, regular_grid
from harness.ops.upsample import Upsample2x, upsample_trilinear2x

__all__ = ["CBAM3d", "ContextResidualModule", "Conv3d", "DistillDSM", "GroupShift", "Obelisk", "ResidualDSM", "Upsample2x",
           "WSConv3d", "context_residual", "conv3d", "group_shift", "onednn_convs", "regular_grid", "shift_slices",
           "slice_residual", "upsample_trilinear2x"]
