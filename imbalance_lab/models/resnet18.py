"""ResNet-18 (He et al. 2016) as torchvision builds it (``torchvision.models.resnet18(weights=None)``: the same
module names, so torchvision's state dicts load), its final ``fc`` left to the Classifier's head (512 features).

The stem depends on the image size: up to ``SMALL_IMAGE_MAX`` (64) pixels it is the usual CIFAR adaptation — a
3x3 convolution with stride 1 and no max-pool (torchvision's 7x7 stride-2 convolution and max-pool would shrink a
32x32 image to 8x8 before the first block); larger images keep torchvision's stem. The global average pool is
:class:`GlobalAvgPool` (what ``nn.AdaptiveAvgPool2d(1)`` computes, but batched by ``vmap``), so a stack of
ResNet-18s trains as one vmapped model like the other backbones.
"""

from torch import nn

from .cnn import GlobalAvgPool

SMALL_IMAGE_MAX = 64  # image sizes up to this get the small-image stem


def resnet18(in_channels: int, image_size: int = 32) -> nn.Module:
    """torchvision's ResNet-18 without its fc (``out_features`` 512); a 3x3 stride-1 stem without max-pool
    for images of at most ``SMALL_IMAGE_MAX`` pixels."""
    # imported here: torchvision.models pulls in torch._dynamo, 1.5 s of every command's start-up otherwise
    from torchvision.models import resnet18 as torchvision_resnet18

    net = torchvision_resnet18(weights=None)
    if image_size <= SMALL_IMAGE_MAX:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision's
    net.avgpool = GlobalAvgPool()
    net.fc = nn.Identity()
    net.out_features = 512
    return net
