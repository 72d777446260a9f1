"""Batched augmentation, the learning-rate schedule and the training loop itself."""

import itertools
import math

import pytest
import torch

from imbalance_lab.losses import build_loss
from imbalance_lab.losses.ce import CELossConfig
from imbalance_lab.models import build_model
from imbalance_lab.schema import OptimConfig, TrainerConfig
from imbalance_lab.train import fit
from imbalance_lab.train.augment import random_crop_flip
from imbalance_lab.train.optim import build_optimizer, build_scheduler, lr_factor


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


def test_constant_keeps_the_base_rate_at_every_step_after_the_warmup():
    """USB's imbalanced algorithms (its debiaspl rows) train with scheduler = None: the base rate throughout,
    which ``optim.schedule=constant`` without warm-up reproduces; a warm-up still ramps up linearly first."""
    steps, epochs = 58, 20
    plain = OptimConfig(name="sgd", lr=0.03, schedule="constant")
    assert {lr_factor(s, steps, epochs, plain) for s in range(steps * epochs)} == {1.0}
    warm = OptimConfig(name="sgd", lr=0.03, schedule="constant", warmup_epochs=2)
    assert lr_factor(0, steps, epochs, warm) == pytest.approx(1 / (2 * steps))
    assert {lr_factor(s, steps, epochs, warm) for s in range(2 * steps - 1, steps * epochs)} == {1.0}
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model.parameters(), plain)
    scheduler = build_scheduler(optimizer, steps, epochs, plain)
    for _ in range(steps * epochs):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.03)


def test_fixmatch_cosine_is_cos_7_pi_k_over_16_K_after_the_warmup():
    """FixMatch's / USB's schedule: cos(7πk/16K), k counted from the end of the warm-up, K the steps after it
    (100 without warm-up, 80 with 2 epochs of it); it falls from 1 to cos(7π(K−1)/16K) ≈ 0.2, never to 0."""
    steps, epochs = 10, 10
    plain = OptimConfig(name="sgd", schedule="fixmatch_cosine")
    factors = [lr_factor(s, steps, epochs, plain) for s in range(steps * epochs)]
    assert factors[0] == 1.0
    assert factors[-1] == pytest.approx(math.cos(7 * math.pi * 99 / (16 * 100)))
    assert all(a > b for a, b in itertools.pairwise(factors))
    warm = OptimConfig(name="sgd", schedule="fixmatch_cosine", warmup_epochs=2)
    assert lr_factor(19, steps, epochs, warm) == 1.0  # the warm-up's last step
    assert lr_factor(20, steps, epochs, warm) == 1.0  # k = 0
    assert lr_factor(20 + 40, steps, epochs, warm) == pytest.approx(math.cos(7 * math.pi / 32))  # k = K/2
    assert lr_factor(99, steps, epochs, warm) == pytest.approx(math.cos(7 * math.pi * 79 / (16 * 80)))
    assert lr_factor(99, steps, epochs, warm) == pytest.approx(0.2119, abs=1e-4)


def test_fit_evaluates_every_k_epochs_and_after_the_last_and_learns():
    """The training loop called directly: on_eval after epochs 2 and 4 (eval_every=2) and after the last (5),
    its record merged into that epoch's history; a separable two-class problem is learnt."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    noise = torch.randint(0, 40, (128, 1, 8, 8), generator=g)
    x = (torch.cat([torch.full((64, 1, 8, 8), 180), torch.full((64, 1, 8, 8), 60)]) + noise).to(torch.uint8)
    y = torch.tensor([0] * 64 + [1] * 64)
    loss_fn = build_loss(CELossConfig(), [64, 64])
    model = build_model("cnn_small", 1, 2, [0.5], [0.25], make_head=loss_fn.make_head)
    calls = []
    history = fit(model, loss_fn, x, y, trainer_cfg=TrainerConfig(epochs=5, batch_size=32, eval_every=2,
                                                                  device="cpu", progress=False),
                  optim_cfg=OptimConfig(name="adam", lr=1e-2), augment=False, generator=g,
                  on_eval=lambda epoch: calls.append(epoch) or {"evaluated_epoch": epoch + 1})
    assert calls == [1, 3, 4]  # 0-based
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    assert [h.get("evaluated_epoch") for h in history] == [None, 2, None, 4, 5]
    assert all(h["images_per_s"] > 0 and h["lr"] == pytest.approx(1e-2) for h in history)
    assert history[-1]["loss"] < history[0]["loss"]
    model.eval()
    with torch.no_grad():
        accuracy = (model(x.float() / 255).argmax(1) == y).float().mean().item()
    assert accuracy > 0.95


def test_no_recalibration_batches_keeps_the_running_averages():
    """trainer.bn_recalibration_batches=0 leaves the loop one empty index batch: the running statistics stay (a
    forward on nothing used to reset them to mean 0, variance 1)."""
    from imbalance_lab.train import Precision
    from imbalance_lab.train.trainer import recalibrate_batchnorm

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    bn = model[1]
    bn.running_mean.fill_(2.0)
    empty = torch.arange(10)[:0].split(4)  # what the loop makes of 0 batches
    recalibrate_batchnorm(model, torch.zeros(10, 3, 8, 8, dtype=torch.uint8), list(empty), Precision())
    assert torch.equal(bn.running_mean, torch.full((4,), 2.0))
