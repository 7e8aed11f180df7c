"""ConResNet: the context residual module, the net, its joint loss and the boundary-loss target."""
from harness.families.conresnet import context_residual, conresnet, losses, transforms  # noqa: F401  (registration)
