"""Batched augmentation and the learning-rate schedule."""

import pytest
import torch

from imbalance_lab.schema import OptimConfig
from imbalance_lab.train.augment import random_crop_flip
from imbalance_lab.train.optim import lr_factor


def test_crop_flip_is_a_shifted_or_mirrored_window_of_the_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g)
    out = random_crop_flip(x, pad=2, generator=g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(2)) for w in windows)
    # not the identity for every image
    assert not torch.equal(out, x)


def test_multistep_with_warmup():
    cfg = OptimConfig(name="sgd", lr=0.1, schedule="multistep", milestones=[160, 180], gamma=0.01,
                      warmup_epochs=5)
    steps = 10
    assert lr_factor(0, steps, 200, cfg) == pytest.approx(1 / 50)
    assert lr_factor(49, steps, 200, cfg) == pytest.approx(1.0)
    assert lr_factor(159 * steps, steps, 200, cfg) == 1.0
    assert lr_factor(160 * steps, steps, 200, cfg) == pytest.approx(0.01)
    assert lr_factor(180 * steps, steps, 200, cfg) == pytest.approx(1e-4)


def test_cosine_ends_near_zero():
    cfg = OptimConfig(name="adam", schedule="cosine")
    assert lr_factor(0, 10, 10, cfg) == 1.0
    assert lr_factor(50, 10, 10, cfg) == pytest.approx(0.5)
    assert lr_factor(99, 10, 10, cfg) < 1e-3
