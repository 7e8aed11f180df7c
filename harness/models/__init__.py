"""Networks, created by name through ``MODELS`` (importing this registers them all)."""
from harness.models import gsp_unet, unet2d  # noqa: F401  (registration)
from harness.models.gsp_unet import GSPBlock, GSPUNet
from harness.models.unet2d import DistillDSMUNet, ResidualDSMUNet, UNet2D
from harness.registry import MODELS

__all__ = ["DistillDSMUNet", "GSPBlock", "GSPUNet", "MODELS", "ResidualDSMUNet", "UNet2D", "build_model"]


def build_model(name: str, **params):
    """Create a registered model; unknown names get a "did you mean" error."""
    return MODELS.get(name, field="model.name")(**params)
