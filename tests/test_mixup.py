"""trainer.mixup: Mixup and Remix inside the one training step (train/mixup.py), checked by hand-computed numbers,
by α = 0 being plain training exactly, and in both stack engines without a host sync."""

import math

import pytest
import torch
from conftest import TINY, compose_run, hydra_compose, run_in_process
from torch import nn

from imbalance_lab.losses import LOSSES, build_loss
from imbalance_lab.losses.ce import CELossConfig
from imbalance_lab.schema import ConfigError, OptimConfig, TrainerConfig
from imbalance_lab.train.mixup import MIXUPS, beta_sample, remix_label_weights, with_mixup
from imbalance_lab.train.trainer import Member, fit_stack


def test_remix_label_rule_on_a_hand_computed_example():
    """n = (100, 30, 10), κ = 3, τ = 0.5; pairs (first label, second label) of every kind."""
    counts = torch.tensor([100.0, 30.0, 10.0])
    a = torch.tensor([0, 2, 0, 1, 1, 0])
    b = torch.tensor([2, 0, 1, 2, 0, 0])  # n_a / n_b: 10, 0.1, 3.33, 3 (= κ), 0.3 (<= 1/κ), 1
    low = remix_label_weights(torch.tensor(0.3), counts[a], counts[b], 3.0, 0.5)
    # λ = 0.3 < τ: a majority first image (ratio >= κ) gives its label away; 1 − λ = 0.7 is not < τ: no label to a
    assert low.tolist() == pytest.approx([0.0, 0.3, 0.0, 0.0, 0.3, 0.3])
    high = remix_label_weights(torch.tensor(0.8), counts[a], counts[b], 3.0, 0.5)
    # λ = 0.8: 1 − λ < τ, a minority first image (ratio <= 1/κ) takes the whole label; λ >= τ: nothing to b
    assert high.tolist() == pytest.approx([0.8, 1.0, 0.8, 0.8, 1.0, 0.8])
    assert MIXUPS["mixup"](torch.tensor(0.3), counts[a], counts[b], 3.0, 0.5).tolist() == pytest.approx([0.3] * 6)


def test_mixed_loss_on_hand_computed_numbers():
    """CE, two samples: z₁ = (ln 3, 0) gives p = (3/4, 1/4), z₂ = (0, 0) gives (1/2, 1/2)."""
    loss = build_loss(CELossConfig(), [5, 5])
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    got = loss.mixed(logits, torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([0.25, 1.0]))
    # mean_i [v_i l(z_i, y_a) + (1 − v_i) l(z_i, y_b)] = ½ [¼ ln(4/3) + ¾ ln 4 + 1 · ln 2 + 0 · ln 2]
    assert got.item() == pytest.approx(0.5 * (0.25 * math.log(4 / 3) + 0.75 * math.log(4) + math.log(2)), rel=1e-6)
    # with DRW (weighted mean) and one λ, it is λ L(y_a) + (1 − λ) L(y_b): mixup_criterion on a weighted CE
    drw = build_loss(CELossConfig(drw_epoch=1), [50, 5])
    drw.start_epoch(0)
    z, y_a, y_b = torch.randn(6, 2, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 0, 1, 0, 1, 1]), \
        torch.tensor([1, 0, 0, 1, 1, 0])
    lam = 0.3
    assert drw.mixed(z, y_a, y_b, torch.full((6,), lam)).item() == pytest.approx(
        (lam * drw(z, y_a) + (1 - lam) * drw(z, y_b)).item(), rel=1e-6)


def test_every_loss_that_takes_mixup_is_itself_at_label_weight_one():
    z = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    y, other = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0]), torch.tensor([2, 2, 1, 1, 0, 0, 1, 2])
    for name, cls in LOSSES.items():
        if cls.mixup_refusal is None:
            loss = build_loss(cls.Config(), [40, 10, 5])
            assert torch.equal(loss.mixed(z, y, other, torch.ones(8)), loss(z, y)), name


def test_beta_draws_on_the_device_generator():
    g = torch.Generator().manual_seed(0)
    uniform = beta_sample(1.0, g, torch.device("cpu"), (20000,))  # Beta(1, 1): mean 1/2, variance 1/12
    assert uniform.mean().item() == pytest.approx(0.5, abs=0.01) and uniform.var().item() == pytest.approx(1 / 12, abs=0.005)
    tiny = beta_sample(0.01, g, torch.device("cpu"), (20000,))  # mass at 0 and 1, yet never 0/0
    assert torch.isfinite(tiny).all() and ((tiny < 0.01) | (tiny > 0.99)).float().mean() > 0.9
    assert beta_sample(0.0, g, torch.device("cpu")).item() == 1.0  # α = 0: λ = 1 (mixup-cifar10's alpha=0)


N, C = 24, 3
X = torch.randint(0, 256, (N, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
Y = torch.arange(N) % C


def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, C))


def members(trainer_cfg, seeds=(0,), counts=(8, 8, 8)) -> list[Member]:
    out = []
    for seed in seeds:
        torch.manual_seed(seed)
        loss = build_loss(CELossConfig(), list(counts))
        model = tiny_model()
        objective = None
        if trainer_cfg.mixup:
            loss, objective = with_mixup(loss, trainer_cfg)
        member = Member(model, loss, torch.Generator().manual_seed(seed))
        if objective is not None:
            member.objective = objective
        out.append(member)
    return out


def trainer(**kw) -> TrainerConfig:
    return TrainerConfig(**{"epochs": 1, "progress": False, "device": "cpu", "bn_recalibration_batches": 0,
                            "checkpoint_every": 0, "sync_check": True, **kw})


@pytest.mark.parametrize("kind", ["mixup", "remix"])
def test_alpha_zero_is_plain_training_exactly(kind):
    """λ = 1: the same inputs, the same loss and the same weights after a step (one step: batch = the split)."""
    results = []
    for mixup in (None, kind):
        cfg = trainer(batch_size=N, mixup=mixup, mixup_alpha=0.0)
        (m,) = members(cfg)
        fit_stack([m], X, Y, trainer_cfg=cfg, optim_cfg=OptimConfig(name="sgd", lr=0.1), augment=True)
        results.append((m.history[0]["loss"], m.model.state_dict()))
    (plain_loss, plain), (mixed_loss, mixed) = results
    assert mixed_loss == plain_loss
    assert all(torch.equal(plain[k], mixed[k]) for k in plain)


def test_remix_trains_every_member_alike_in_both_engines_without_a_host_sync():
    """Two members, α = 1, imbalanced counts: each member's λ and pairs come from its own generator, so the loop and
    the vmapped stack take the same steps (float32 rounding apart); sync_check refuses any host sync in the step."""
    losses = {}
    for engine in ("loop", "vmap"):
        cfg = trainer(batch_size=8, mixup="remix", mixup_alpha=1.0, stacking=engine)
        stack = members(cfg, seeds=(0, 1), counts=(10, 6, 2))
        assert fit_stack(stack, X, Y, trainer_cfg=cfg, optim_cfg=OptimConfig(name="sgd", lr=0.05), augment=True) \
            == engine
        losses[engine] = [m.history[0]["loss"] for m in stack]
    assert losses["vmap"] == pytest.approx(losses["loop"], rel=1e-5)
    assert losses["loop"][0] != losses["loop"][1]  # the members drew their own λ and pairs


def test_a_run_with_remix_and_the_losses_that_refuse_mixup(tmp_path):
    metrics = run_in_process(tmp_path, *TINY, "loss=ldam_drw", "loss.drw_epoch=1", "trainer.mixup=remix")
    assert metrics["status"] == "done" and metrics["config"]["trainer"]["mixup"] == "remix"
    refusing = {name for name, loss in LOSSES.items() if loss.mixup_refusal}
    assert refusing == {"affinity", "debiased"}
    with hydra_compose() as compose:
        for overrides, message in [
            (["loss=affinity", "trainer.mixup=mixup"], (r"^trainer.mixup='mixup' is not allowed: null with "
                                                        r"loss=affinity: its batch loss adds the centre regulariser")),
            (["loss=debiased", "trainer.mixup=remix"], r"^trainer.mixup='remix' is not allowed: null with loss=debiased"),
            (["method=fixmatch", "data=cifar10_lt", "data.n_max=100", "trainer.mixup=mixup"],
             r"^trainer.mixup='mixup' is not allowed: null with method=fixmatch"),
            (["trainer.mixup=cutmix"], r"^trainer.mixup='cutmix' is not allowed: null or one of mixup, remix$"),
        ]:
            with pytest.raises(ConfigError, match=message):
                compose_run(*overrides, compose=compose)
    for key, value, allowed in [("mixup_alpha", -1.0, "a number >= 0"), ("mixup_kappa", 0.5, "a number >= 1"),
                                ("mixup_tau", 1.5, r"a number in \[0, 1\]")]:
        with pytest.raises(ConfigError, match=rf"^trainer.{key}={value} is not allowed: {allowed}"):
            TrainerConfig(**{key: value})
