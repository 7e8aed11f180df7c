"""GSP-Conv (Group Shift + pointwise convolutions): the Group Shift op and the GSP U-Net."""
from harness.families.gsp_conv import group_shift, gsp_unet  # noqa: F401  (registration)
