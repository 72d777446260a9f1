"""The Conv-BN-ReLU CNNs of the affinity-loss reimplementation (github.com/koshian2/affinity-loss): stages of Conv3x3 -> BN -> ReLU separated by 2x2 average pooling,
then global average pooling and a BatchNorm1d (the affinity head expects normalised features)."""

from torch import nn


class GlobalAvgPool(nn.Module):
    """Mean over height and width, (N, C, H, W) -> (N, C, 1, 1): what ``nn.AdaptiveAvgPool2d(1)`` computes, without
    its restriding of channels-last outputs, which functorch has no batching rule for (a vmapped stack would run
    it member by member)."""

    def forward(self, x):
        return x.mean(dim=(-2, -1), keepdim=True)


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ConvNet(nn.Module):
    """``widths`` lists the conv widths of each stage, e.g. ((32,), (64,), (128,)) for cnn_mnist."""

    def __init__(self, in_channels: int, widths: tuple[tuple[int, ...], ...]):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for stage, stage_widths in enumerate(widths):
            if stage > 0:
                layers.append(nn.AvgPool2d(2))
            for w in stage_widths:
                layers.append(conv_bn_relu(c, w))
                c = w
        layers += [GlobalAvgPool(), nn.Flatten(), nn.BatchNorm1d(c)]
        self.features = nn.Sequential(*layers)
        self.out_features = c

    def forward(self, x):
        return self.features(x)
