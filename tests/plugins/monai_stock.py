"""MONAI's DynUNet, SegResNetVAE and UNETR registered with their stock constructors and no
wrapper, as a user brings them (docs/bring_your_own_net.md; tests/test_outside_nets.py): the
study gives what their constructors need, output adapters read their training outputs."""
from monai.networks.nets import UNETR, DynUNet, SegResNetVAE, VarAutoEncoder

from harness.registry import MODELS

MODELS.register("dynunet")(DynUNet)
MODELS.register("segresnet_vae")(SegResNetVAE)
MODELS.register("unetr")(UNETR)
MODELS.register("var_autoencoder")(VarAutoEncoder)  # built for one size (in_shape), like UNETR
