"""WideResNet-28-2 (Zagoruyko & Komodakis 2016, "Wide Residual Networks") in the variant FixMatch (Sohn et al.
2020, google-research/fixmatch ``libml/models.py``) and USB (microsoft/Semi-supervised-learning,
``semilearn/nets/wrn/wrn.py``, ``wrn_28_2``) train: the backbone of the classic-CV SSL tables.

- stem: conv3x3(in → 16, bias);
- three stages of (28 − 4) / 6 = 4 pre-activation basic blocks, widths 16k = 32, 64, 128 (k = 2), strides
  1, 2, 2; a block is BN → LeakyReLU(0.1) → conv3x3(stride) → BN → LeakyReLU(0.1) → conv3x3, every conv with
  a bias. The shortcut is the raw input when the width stays; when it changes, the block's first BN +
  LeakyReLU is applied to the input once and both the residual branch and the 1x1 conv(stride) shortcut
  read the activated input;
- BN → LeakyReLU(0.1) → global average pool → 128 features.

BatchNorm has momentum 0.001 and eps 0.001 (TensorFlow's decay 0.999: running statistics move slowly).
Convolutions are initialised kaiming-normal (fan_out, leaky_relu), BatchNorm with weight 1 and bias 0.

Deliberate difference from USB: the linear head is built by :class:`~imbalance_lab.models.classifier.Classifier`
with PyTorch's default ``nn.Linear`` initialisation (USB: xavier-normal weights, zero bias), as for every
backbone here.
"""

from torch import nn

from .cnn import GlobalAvgPool


def bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=0.001, eps=0.001)


class PreActBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1, self.act1 = bn(c_in), nn.LeakyReLU(0.1)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=True)
        self.bn2, self.act2 = bn(c_out), nn.LeakyReLU(0.1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=True)
        self.shortcut = None if c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride=stride, bias=True)

    def forward(self, x):
        pre = self.act1(self.bn1(x))
        out = self.conv2(self.act2(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-(6n + 4)-k with n = ``blocks_per_stage``, k = ``widen``; the defaults are WRN-28-2."""

    def __init__(self, in_channels: int, blocks_per_stage: int = 4, widen: int = 2):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=True)
        layers, c = [], 16
        for width, stride in zip((16 * widen, 32 * widen, 64 * widen), (1, 2, 2)):
            for b in range(blocks_per_stage):
                layers.append(PreActBlock(c, width, stride if b == 0 else 1))
                c = width
        self.stages = nn.Sequential(*layers)
        self.pool = nn.Sequential(bn(c), nn.LeakyReLU(0.1), GlobalAvgPool(), nn.Flatten())
        self.out_features = c
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.pool(self.stages(self.stem(x)))
