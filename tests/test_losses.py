"""Losses against hand computations on small tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from imbalance_lab.losses import LOSSES, build_loss
from imbalance_lab.losses.ce import CELossConfig
from imbalance_lab.losses.focal import FocalLossConfig
from imbalance_lab.losses.weighted_ce import WeightedCELossConfig

COUNTS = [100, 10, 1]
LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-3.0, 4.0, 1.0], [10.0, -10.0, 0.0]])
TARGETS = torch.tensor([0, 2, 1, 1])


def test_registry_names():
    assert {"ce", "weighted_ce", "focal", "cb", "affinity", "logit_adjusted", "ldam", "debiased"} <= set(LOSSES)


def test_ce_hand_computed():
    loss = build_loss(CELossConfig(), COUNTS)(LOGITS[:1], TARGETS[:1])
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.5) + math.exp(-1.0)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_focal_gamma0_equals_ce():
    focal = build_loss(FocalLossConfig(gamma=0.0), COUNTS)(LOGITS, TARGETS)
    ce = F.cross_entropy(LOGITS, TARGETS)
    torch.testing.assert_close(focal, ce, rtol=1e-6, atol=1e-7)


def test_focal_hand_computed():
    # one sample, z = (1, 0), y = 0: p = e/(e+1); L = (1-p)^2 * -log p
    p = math.e / (math.e + 1)
    expected = (1 - p) ** 2 * -math.log(p)
    loss = build_loss(FocalLossConfig(gamma=2.0), [5, 5])(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_focal_alpha_weights_each_sample():
    cfg = FocalLossConfig(gamma=1.0, alpha=[0.25, 0.75])
    logits, targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1])
    p0, p1 = math.e / (math.e + 1), 1 / (math.e + 1)
    expected = (0.25 * (1 - p0) * -math.log(p0) + 0.75 * (1 - p1) * -math.log(p1)) / 2
    assert build_loss(cfg, [5, 5])(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_focal_small_gamma_has_finite_gradient_on_confident_sample():
    logits = torch.tensor([[50.0, -50.0]], requires_grad=True)
    loss = build_loss(FocalLossConfig(gamma=0.2), [5, 5])(logits, torch.tensor([0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("power", [1.0, 0.5])
def test_weighted_ce_hand_computed(power):
    w = [n ** -power for n in COUNTS]
    w = [x * 3 / sum(w) for x in w]
    per_sample = F.cross_entropy(LOGITS, TARGETS, reduction="none").tolist()
    expected = sum(w[t] * ce for t, ce in zip(TARGETS.tolist(), per_sample)) / len(per_sample)
    loss = build_loss(WeightedCELossConfig(power=power), COUNTS)(LOGITS, TARGETS)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert sum(w) == pytest.approx(3.0)
