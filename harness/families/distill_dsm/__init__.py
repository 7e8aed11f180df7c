"""Distill DSM: depth shift modules, the slice-wise 2D U-Nets, the residual 3D U-Net and VFN."""
from harness.families.distill_dsm import depth_shift, unet2d, unet3d, vfn  # noqa: F401  (registration)
