"""Networks, created by name through ``MODELS``. The built-in families register theirs from
their own packages (``harness/families/<paper>/``), as a plugin does; ``blocks.py`` holds the
blocks they share."""
import inspect

from harness.ops.conv import onednn_convs
from harness.registry import MODELS

__all__ = ["MODELS", "build_model"]


def build_model(name: str, input_size=None, output=None, cpu_conv_route: bool | None = None, **params):
    """Create a registered model; unknown names get a "did you mean" error.

    A model whose layers depend on the input's size (a fully connected bottleneck) declares an
    ``input_size`` parameter; it receives ``input_size`` (the trial's patch) unless the study
    sets it. A model whose heads depend on the output activation (ConResNet's residual heads
    predict the regions, not the softmax background) declares ``output``; it receives
    ``train.output``. A built-in family's ``nn.Conv3d`` layers run batch-1 CPU convolutions on
    oneDNN (``harness.ops.conv``), not on PyTorch's fallback (up to 11x slower, ``harness bench``;
    ``HARNESS_CPU_KERNELS=0`` turns it off); ``cpu_conv_route`` (``train.cpu_conv_route``) True
    routes a plugin's net too, False none.
    """
    cls = MODELS.get(name, field="model.name")
    declared = inspect.signature(cls).parameters
    if input_size is not None and "input_size" in declared:
        params.setdefault("input_size", [int(s) for s in input_size])
    if output is not None and "output" in declared:
        params["output"] = output
    if not any(p.kind == p.VAR_KEYWORD for p in declared.values()):
        # A net whose channels come from elsewhere (MONAI's VarAutoEncoder: in_shape) takes none.
        params = {k: v for k, v in params.items() if k in declared or k not in ("in_channels", "out_channels")}
    model = cls(**params)
    # The batch-1 CPU convolution route (harness.ops.conv) for the harness's own families unless
    # the study says otherwise: a plugin's net (MONAI's, timm's) runs as its authors wrote it.
    route = cls.__module__.startswith("harness.") if cpu_conv_route is None else cpu_conv_route
    return onednn_convs(model) if route else model
