"""Backbone -> optional embedding projection -> head. Input is normalised here, so the trainer feeds
raw pixel values scaled to [0, 1]."""

import torch
from torch import nn

from .cnn import ConvNet
from .pretrained import load_pretrained
from .resnet import ResNet32
from .resnet18 import resnet18
from .wrn import WideResNet

# name -> backbone(in_channels, image_size); the image size matters only to those whose stem depends on it
BACKBONES = {
    "cnn_mnist": lambda in_ch, size: ConvNet(in_ch, widths=((32,), (64,), (128,))),
    # cnn_mnist's shape on 3-channel input: cheap enough to train on a CPU
    "cnn_small": lambda in_ch, size: ConvNet(in_ch, widths=((32,), (64,), (128,))),
    "cnn_cifar": lambda in_ch, size: ConvNet(in_ch, widths=((64, 64, 64), (128, 128, 128), (256, 256, 256))),
    "resnet32": lambda in_ch, size: ResNet32(in_ch),
    "wrn28_2": lambda in_ch, size: WideResNet(in_ch),  # FixMatch's / USB's WRN-28-2
    "resnet18": resnet18,  # torchvision's ResNet-18; small-image stem up to 64 pixels
}


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int, mean, std, embedding_dim: int | None = None,
                 head: nn.Module | None = None):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.backbone = backbone
        dim = backbone.out_features
        # A low-dimensional embedding (e.g. 2-D, for scatter plots); BatchNorm keeps it normalised for the head.
        self.embed = (
            nn.Sequential(nn.Linear(dim, embedding_dim), nn.BatchNorm1d(embedding_dim))
            if embedding_dim else nn.Identity()
        )
        self.embedding_dim = embedding_dim or dim
        self.head = head if head is not None else nn.Linear(self.embedding_dim, num_classes)

    def features(self, x):
        return self.embed(self.backbone((x - self.mean) / self.std))

    def forward(self, x):
        return self.head(self.features(x))


def build_model(name: str, in_channels: int, num_classes: int, mean, std, embedding_dim=None,
                make_head=None, image_size: int = 32, pretrained: str | None = None, standardize: bool = True,
                bn_momentum: float | None = None, bn_eps: float | None = None) -> Classifier:
    """``make_head(in_features, num_classes)`` builds the head (the loss decides: linear, affinity, cosine);
    ``pretrained``: a state dict file to start from (``model.pretrained``, see ``models/pretrained.py``).
    ``standardize`` false (``data.standardize``): the input is x / 255 as it is, ``mean`` and ``std`` unused;
    ``bn_momentum`` / ``bn_eps`` (``model.bn_momentum`` / ``model.bn_eps``): every BatchNorm layer's, None keeps
    the architecture's own."""
    backbone = BACKBONES[name](in_channels, image_size)
    dim = embedding_dim or backbone.out_features
    head = make_head(dim, num_classes) if make_head else None
    if not standardize:
        mean, std = [0.0] * in_channels, [1.0] * in_channels
    model = Classifier(backbone, num_classes, mean, std, embedding_dim, head)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = m.momentum if bn_momentum is None else bn_momentum
            m.eps = m.eps if bn_eps is None else bn_eps
    if pretrained:
        load_pretrained(model, pretrained)
    return model
