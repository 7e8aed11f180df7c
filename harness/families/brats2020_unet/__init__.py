"""BraTS 2020's self-ensembled U-Net: CBAM, the net, its augmentation, self-ensembling and
patient removal, the 16-view TTA set, label maps and the two-pipeline merge."""
from harness.families.brats2020_unet import cbam, brats_unet, transforms, callbacks, views, labels  # noqa: F401  (registration)
