"""Backbones: the shapes and sizes the papers they come from state; the input and BatchNorm settings a run
can change."""

import pytest
import torch
from conftest import TINY, compose_run

from imbalance_lab import run
from imbalance_lab.data import build_split
from imbalance_lab.models import build_model
from imbalance_lab.models.wrn import PreActBlock
from imbalance_lab.schema import ConfigError, ModelConfig, OptimConfig
from imbalance_lab.train.optim import build_optimizer


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


def test_input_standardisation_and_batchnorm_settings_are_switches_of_the_config():
    """``data.standardize=false``: the model sees x / 255 as it is (mean 0, std 1), as Keras scripts that only
    scale to [0, 1]; ``model.bn_momentum`` / ``model.bn_eps``: every BatchNorm layer's (Keras' defaults are
    0.01 and 1e-3 in PyTorch's terms); unset, each architecture keeps its own (wrn28_2: 0.001 and 0.001)."""
    mean, std = [0.1307], [0.3081]
    model = build_model("cnn_mnist", 1, 10, mean, std)
    assert model.mean.flatten().tolist() == pytest.approx(mean) and model.std.flatten().tolist() == pytest.approx(std)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 4 and all(m.momentum == 0.1 and m.eps == 1e-5 for m in norms)
    model = build_model("cnn_mnist", 1, 10, mean, std, standardize=False, bn_momentum=0.01, bn_eps=1e-3)
    assert model.mean.flatten().tolist() == [0.0] and model.std.flatten().tolist() == [1.0]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 4 and all(m.momentum == 0.01 and m.eps == 1e-3 for m in norms)
    wrn = [m for m in build_model("wrn28_2", 3, 10, [0.5] * 3, [0.25] * 3).modules()
           if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.momentum == 0.001 and m.eps == 0.001 for m in wrn)


def test_the_runs_model_and_optimiser_follow_those_switches():
    cfg, _, _ = compose_run(*TINY, "data.standardize=false", "model.bn_momentum=0.01", "model.bn_eps=0.001",
                            "optim.eps=1e-7")
    split = build_split(cfg.data)
    member = run.stack_member(cfg, split, {}, torch.device("cpu"), torch.Generator())
    assert member.model.mean.flatten().tolist() == [0.0] * split.in_channels
    assert member.model.std.flatten().tolist() == [1.0] * split.in_channels
    norms = [m for m in member.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.momentum == 0.01 and m.eps == 0.001 for m in norms)
    assert build_optimizer(member.model.parameters(), cfg.optim).defaults["eps"] == 1e-7
    default, _, _ = compose_run(*TINY)
    assert (default.data.standardize, default.model.bn_momentum, default.model.bn_eps, default.optim.eps) == (
        True, None, None, 1e-8)
    model = run.stack_member(default, split, {}, torch.device("cpu"), torch.Generator()).model
    assert model.mean.flatten().tolist() == pytest.approx(split.mean)


@pytest.mark.parametrize("make, key, value", [
    (lambda: ModelConfig(name="cnn_mnist", bn_momentum=0.0), "model.bn_momentum", 0.0),
    (lambda: ModelConfig(name="cnn_mnist", bn_momentum=1.5), "model.bn_momentum", 1.5),
    (lambda: ModelConfig(name="cnn_mnist", bn_eps=0.0), "model.bn_eps", 0.0),
    (lambda: OptimConfig(name="adam", eps=0.0), "optim.eps", 0.0),
])
def test_their_ranges_are_checked(make, key, value):
    with pytest.raises(ConfigError) as err:
        make()
    assert err.value.key == key and err.value.value == value
