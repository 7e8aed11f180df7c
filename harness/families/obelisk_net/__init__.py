"""OBELISK-Net: the OBELISK sparse deformable sampling op, its nets, OHEM cross-entropy and the
random-matrix affine augmentation."""
from harness.families.obelisk_net import obelisk_op, obelisk, losses, transforms  # noqa: F401  (registration)
