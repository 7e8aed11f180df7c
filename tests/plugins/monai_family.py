"""A plugin around third-party nets, as a user writes one: MONAI's UNet and BasicUNet with the
channels their classes require, a loss from MONAI, and a cost handle for the one op the
harness does not count (Mish). Nothing in harness/ is edited (tests/test_outside_nets.py)."""
from fvcore.nn.jit_handles import elementwise_flop_counter
from monai.losses import TverskyLoss
from monai.networks.nets import BasicUNet, UNet

from harness.losses import SegLoss
from harness.registry import COST_HANDLES, LOSSES, MODELS


@MODELS.register("monai_unet")
def monai_unet(in_channels: int, out_channels: int, channels: tuple = (8, 16, 32), strides: tuple = (2, 2),
               num_res_units: int = 1, act: str = "prelu"):
    """MONAI's residual UNet; ``in_channels`` and ``out_channels`` come from the data set."""
    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, channels=channels,
                strides=strides, num_res_units=num_res_units, act=act)


@MODELS.register("monai_basic_unet")
def monai_basic_unet(in_channels: int, out_channels: int, features: tuple = (4, 4, 8, 16, 32, 4)):
    """MONAI's BasicUNet."""
    return BasicUNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, features=features)


@LOSSES.register("tversky")
def tversky(output: str, alpha: float = 0.3, beta: float = 0.7):
    """MONAI's Tversky loss on the segmentation (``SegLoss`` adapts it to the loss contract)."""
    return SegLoss(TverskyLoss(sigmoid=output == "sigmoid", softmax=output == "softmax",
                               to_onehot_y=output == "softmax", alpha=alpha, beta=beta), output)


# Mish (x tanh(softplus(x))): counted as 3 operations per value.
COST_HANDLES.register("aten::mish")(elementwise_flop_counter(0, 3))
