"""Core ops, registered by name through ``OPS``: the CPU convolution route and trilinear x2
upsampling (``native.py`` builds their C kernels). A family's own ops live in its package
(``harness/families/<paper>/``)."""
from harness.ops.conv import Conv3d, conv3d, onednn_convs
from harness.ops.upsample import Upsample2x, upsample_trilinear2x

__all__ = ["Conv3d", "Upsample2x", "conv3d", "onednn_convs", "upsample_trilinear2x"]
