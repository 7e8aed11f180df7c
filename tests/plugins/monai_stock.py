"""MONAI's DynUNet, SegResNetVAE and UNETR registered with their stock constructors and no
wrapper, as a user brings them (docs/bring_your_own_net.md; tests/test_outside_nets.py): the
study gives what their constructors need, output adapters read their training outputs."""
from monai.networks.nets import UNETR, DynUNet, SegResNetVAE, VarAutoEncoder

from harness.registry import MODELS

MODELS.register("dynunet")(DynUNet)
MODELS.register("segresnet_vae")(SegResNetVAE)
MODELS.register("unetr")(UNETR)
MODELS.register("var_autoencoder")(VarAutoEncoder)  # built for one size (in_shape), like UNETR


@MODELS.register("segresnet_vae_sized")
def segresnet_vae_sized(in_channels: int, out_channels: int, input_size: tuple, init_filters: int = 8,
                        vae_nz: int = 16):
    """SegResNetVAE sized by the harness's ``input_size`` (the trial's patch, injected): its VAE's
    linear layer has input_size // 16 voxels' features, none below 16 on an axis."""
    return SegResNetVAE(input_image_size=input_size, in_channels=in_channels, out_channels=out_channels,
                        init_filters=init_filters, vae_nz=vae_nz)
