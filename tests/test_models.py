"""Backbones: the shapes and sizes the papers they come from state."""

import torch

from imbalance_lab.models import build_model
from imbalance_lab.models.wrn import PreActBlock


def test_wrn28_2_is_fixmatchs_1_47m_parameter_network():
    """WRN-28-2 with a 10-class linear head: 1.47M parameters (FixMatch, Sohn et al. 2020; USB's wrn_28_2 has
    the same 1,469,642), 128 pooled features; 12 pre-activation blocks, a 1x1 shortcut where the width
    changes (16→32, 32→64, 64→128), BatchNorm with momentum and eps 0.001."""
    model = build_model("wrn28_2", 3, 10, [0.5] * 3, [0.25] * 3)
    n = sum(p.numel() for p in model.parameters())
    assert n == 1_469_642
    assert 1_460_000 <= n <= 1_480_000
    assert model.backbone.out_features == 128
    blocks = [m for m in model.modules() if isinstance(m, PreActBlock)]
    assert len(blocks) == 12
    assert [b.shortcut.stride for b in blocks if b.shortcut is not None] == [(1, 1), (2, 2), (2, 2)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 25 and all(m.momentum == 0.001 and m.eps == 0.001 for m in norms)
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        assert model.features(torch.rand(2, 3, 32, 32)).shape == (2, 128)
