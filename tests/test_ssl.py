"""Semi-supervised mode (method=fixmatch): FixMatch and DebiasPL's debiased pseudo-labels (Wang et al. 2022), the
strong augmentation, the unlabelled split, and that a run trains through the one loop, deterministically,
resumably, without ever giving the unlabelled labels to the loss."""

import copy
import importlib.util
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, compose_run, run_in_process

from imbalance_lab import checkpoint, run
from imbalance_lab.data import build_split
from imbalance_lab.data.profiles import exp_counts
from imbalance_lab.data.unlabelled import build_unlabelled
from imbalance_lab.losses import build_loss
from imbalance_lab.losses.ce import CELossConfig
from imbalance_lab.losses.fixmatch import FixMatchLoss, debiased_pseudo_labels
from imbalance_lab.models import build_model
from imbalance_lab.schema import ConfigError, OptimConfig, SSLConfig, TrainerConfig
from imbalance_lab.train import Member, randaugment
from imbalance_lab.train.randaugment import OPS, strong_augment
from imbalance_lab.train.semi import FixMatchObjective
from imbalance_lab.train.stack import vmap_obstacle
from imbalance_lab.train.trainer import fit_stack

# 3 synthetic classes, 16x16: labelled 40/20/10, unlabelled 60/30/15 (from the same 120 per class).
SSL = ["data=synthetic", "data.synthetic.num_classes=3", "data.synthetic.train_per_class=120",
       "data.synthetic.test_per_class=32", "data.synthetic.image_size=16", "data.profile=exp", "data.imbalance=4",
       "data.n_max=40", "trainer.epochs=3", "trainer.batch_size=16", "trainer.progress=false", "trainer.device=cpu",
       "method=fixmatch", "ssl.mu=2", "ssl.unlabelled_n_max=60", "ssl.unlabelled_imbalance=4", "ssl.threshold=0.6",
       "ssl.ema=0.9"]
TIMES = {"wall_seconds", "train_seconds", "train_images_per_s", "resumed_from_epoch", "stack"}


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMES} | {
        "history": [{k: v for k, v in h.items() if k not in ("seconds", "images_per_s")} for h in metrics["history"]]}


@pytest.fixture(scope="module")
def cifar_images():
    """64 real CIFAR-10 training images (the bit-exact subset of the mirror), uint8 N×3×32×32."""
    root = os.environ.get("IMBALANCE_LAB_DATA")
    if not root:
        pytest.fail("IMBALANCE_LAB_DATA is not set: point it at the offline dataset mirror (../shared/data)")
    with np.load(Path(root) / "cifar10_lossless_subset.npz", allow_pickle=False) as f:
        return torch.from_numpy(np.ascontiguousarray(f["train_images"][:64].transpose(0, 3, 1, 2)))


# ----------------------------------------------------------------------------- strong augmentation
def test_strong_augmentation_is_deterministic_under_the_seed_and_changes_every_image(cifar_images):
    def augment(seed):
        return strong_augment(cifar_images, torch.Generator().manual_seed(seed))

    a, b, c = augment(0), augment(0), augment(1)
    assert a.dtype == torch.uint8 and a.shape == cifar_images.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    changed = (a != cifar_images).flatten(1).any(1)
    assert changed.all()  # Cutout alone changes every image
    # Cutout: at most a 16x16 grey square; the RandAugment rounds change pixels outside it in most images
    outside = ((a != cifar_images) & (a != 127)).flatten(1).float().mean(1)
    assert (outside > 0.05).float().mean() > 0.5


@pytest.mark.parametrize("op", OPS)
def test_every_randaugment_op_changes_a_real_image_and_identity_keeps_it(cifar_images, monkeypatch, op):
    n = len(cifar_images)

    def forced(n_, x, generator):  # every image gets ``op`` at magnitude 9, positive sign
        return torch.full((n,), OPS.index(op)), torch.full((n,), 9.0), torch.ones(n)

    monkeypatch.setattr(randaugment, "_draw", forced)
    out = randaugment._one_round(cifar_images, torch.Generator().manual_seed(0))
    differs = (out != cifar_images).flatten(1).any(1).float().mean()
    if op == "identity":
        assert differs == 0
    else:
        assert differs > 0.9, f"{op} left {1 - differs:.0%} of the images unchanged"


# ----------------------------------------------------------------------------- the objective
def fixmatch_loss(debias: bool, tau: float = 1.0, threshold: float = 0.5, lambda_u: float = 2.0) -> FixMatchLoss:
    ce = build_loss(CELossConfig(), [10, 10, 10])
    return FixMatchLoss(ce, SSLConfig(debias=debias, tau=tau, threshold=threshold, lambda_u=lambda_u))


def batch_logits(b=4, u=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b + 2 * u, 3, generator=g) * 2, torch.randint(0, 3, (b,), generator=g)


def test_with_tau_zero_the_loss_is_fixmatch():
    logits, y = batch_logits()
    z_x, (z_w, z_s) = logits[:4], logits[4:].chunk(2)
    confidence, pseudo = z_w.softmax(1).max(1)
    fixmatch = F.cross_entropy(z_x, y) + 2.0 * (F.cross_entropy(z_s, pseudo, reduction="none")
                                                * (confidence >= 0.5)).mean()
    for loss_fn in (fixmatch_loss(debias=True, tau=0.0), fixmatch_loss(debias=False, tau=1.0)):
        assert torch.allclose(loss_fn(logits, y), fixmatch)
    # debiasing changes it once q̂ is not uniform (a uniform q̂ shifts every logit alike)
    debiased = fixmatch_loss(debias=True, tau=1.0)
    debiased.q_hat.copy_(torch.tensor([0.6, 0.3, 0.1]))
    assert not torch.allclose(debiased(logits, y), fixmatch)


def test_the_debiased_pseudo_label_on_a_hand_example():
    z = torch.tensor([[2.0, 1.5, 0.0]])
    q_hat = torch.tensor([0.7, 0.2, 0.1])  # class 0 over-predicted
    # z − log q̂ = [2 + 0.357, 1.5 + 1.609, 0 + 2.303]: class 1 wins where plain argmax says 0
    adjusted = [2.0 - math.log(0.7), 1.5 - math.log(0.2), 0.0 - math.log(0.1)]
    p1 = math.exp(adjusted[1]) / sum(math.exp(a) for a in adjusted)
    labels, mask = debiased_pseudo_labels(z, q_hat, tau=1.0, threshold=p1 - 1e-4)
    assert labels.tolist() == [1] and mask.tolist() == [True]
    assert debiased_pseudo_labels(z, q_hat, tau=1.0, threshold=p1 + 1e-4)[1].tolist() == [False]
    assert debiased_pseudo_labels(z, q_hat, tau=0.0, threshold=0.0)[0].tolist() == [0]


def test_q_hat_is_the_momentum_average_of_the_weak_view_softmax_and_the_margin_uses_it():
    loss_fn = fixmatch_loss(debias=True, tau=0.5, threshold=1e-6, lambda_u=1.0)  # every pseudo-label used
    loss_fn.momentum = 0.9
    logits, y = batch_logits()
    z_x, (z_w, z_s) = logits[:4], logits[4:].chunk(2)
    expected_q = 0.9 * torch.full((3,), 1 / 3) + 0.1 * z_w.softmax(1).mean(0)
    with torch.no_grad():  # evaluation never moves q̂
        loss_fn(logits, y)
    assert torch.allclose(loss_fn.q_hat, torch.full((3,), 1 / 3))
    loss = loss_fn(logits, y)
    assert torch.allclose(loss_fn.q_hat, expected_q)
    # pseudo-labels from the q̂ before the update; the strong-view margin with the updated one
    pseudo = (z_w - 0.5 * torch.full((3,), 1 / 3).log()).argmax(1)
    margin = F.cross_entropy(z_s + 0.5 * expected_q.log(), pseudo)
    assert torch.allclose(loss, F.cross_entropy(z_x, y) + margin)


# ----------------------------------------------------------------------------- data and config
def test_the_unlabelled_split_follows_the_protocol_and_is_disjoint_from_the_labelled_one(mirror):
    for profile, gamma_u in (("exp", 100), ("exp", 1), ("exp_reversed", 100)):
        cfg, _, _ = compose_run("experiment=debiaspl_cifar10_lt", f"ssl.unlabelled_imbalance={gamma_u}",
                                f"ssl.unlabelled_profile={profile}", f"data.root={mirror}")
        labelled = build_split(cfg.data)
        unlabelled = build_unlabelled(cfg.data, cfg.ssl, labelled)
        assert labelled.class_counts["train"] == exp_counts(1500, 10, 100)  # 1500, 899, ..., 15
        expected = exp_counts(3000, 10, gamma_u)  # 3000, 1798, ..., 30 (or 3000 each)
        assert unlabelled.class_counts == (expected[::-1] if profile == "exp_reversed" else expected)
        assert not set(unlabelled.indices) & set(labelled.indices["train"])
        assert np.array_equal(np.bincount(unlabelled.hidden_y, minlength=10), unlabelled.class_counts)
    assert build_unlabelled(cfg.data, cfg.ssl, labelled).fingerprint == unlabelled.fingerprint


@pytest.mark.parametrize("override, key", [
    ("ssl.unlabelled_n_max=4000", "ssl.unlabelled_n_max"),  # 1500 labelled + 4000 > 5000 per class
    ("ssl.threshold=0", "ssl.threshold"),
    ("ssl.qhat_momentum=1", "ssl.qhat_momentum"),
    ("ssl.unlabelled_imbalance=0.5", "ssl.unlabelled_imbalance"),
    ("ssl.unlabelled_profile=none", "ssl.unlabelled_profile"),
    ("ssl.mu=0", "ssl.mu"),
])
def test_bad_ssl_settings_are_one_line_errors_naming_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        compose_run("experiment=debiaspl_cifar10_lt", override)
    assert info.value.key == key and "\n" not in str(info.value)


# ----------------------------------------------------------------------------- runs
def test_unlabelled_labels_never_reach_the_loss(tmp_path, monkeypatch):
    honest = run_in_process(tmp_path / "honest", *SSL, "ssl.debias=true")
    build = run.build_unlabelled

    def scrambled(*args):
        split = build(*args)
        split.hidden_y = np.random.default_rng(0).permutation(split.hidden_y)
        return split

    monkeypatch.setattr(run, "build_unlabelled", scrambled)
    blind = run_in_process(tmp_path / "scrambled", *SSL, "ssl.debias=true")
    keys = ("loss", "loss_x", "loss_u", "q_hat", "pseudo_label_counts", "pseudo_label_accepted")
    assert [[h[k] for k in keys] for h in honest["history"]] == [[h[k] for k in keys] for h in blind["history"]]
    assert honest["test"] == blind["test"]
    # the scramble reached the diagnostics: their precision is scored against the (scrambled) hidden labels
    assert honest["history"][-1]["pseudo_label_precision"] != blind["history"][-1]["pseudo_label_precision"]


def test_fixmatch_and_debiaspl_runs_record_pseudo_labels_and_resume_exactly(tmp_path, monkeypatch):
    args = [*SSL, "ssl.debias=true", "trainer.epochs=4", "trainer.checkpoint_every=2", "trainer.eval_every=2"]
    saved = []
    save = checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda out_dir, state: (save(out_dir, state), saved.append(
        shutil.copy(Path(out_dir) / checkpoint.CHECKPOINT, tmp_path / "epoch2.pt"))))
    alone = run_in_process(tmp_path / "alone", *args)
    assert saved and "ema" in torch.load(tmp_path / "epoch2.pt", weights_only=True)["objective"]
    (tmp_path / "resumed").mkdir()
    shutil.copy(tmp_path / "epoch2.pt", tmp_path / "resumed" / checkpoint.CHECKPOINT)
    resumed = run_in_process(tmp_path / "resumed", *args)
    assert resumed["resumed_from_epoch"] == 2 and alone["resumed_from_epoch"] is None
    assert comparable(resumed) == comparable(alone)

    assert alone["method"] == "debiaspl" and alone["evaluated_model"] == "ema"
    last = alone["history"][-1]
    assert sum(last["pseudo_label_counts"]) == np.sum(alone["pseudo_label_confusion"]) > 0
    assert len(last["pseudo_label_precision"]) == len(last["pseudo_label_recall"]) == 3
    assert math.isclose(sum(last["q_hat"]), 1.0, rel_tol=1e-4) and last["q_hat"] != [1 / 3] * 3
    assert alone["data"]["unlabelled"]["class_counts"] == [60, 30, 15]
    indices = np.load(tmp_path / "alone" / "subset_indices.npz")
    assert not set(indices["unlabelled"]) & set(indices["train"])
    for name in ("pseudo_labels.png", "pseudo_label_confusion.png", "model.pt"):
        assert (tmp_path / "alone" / name).stat().st_size > 0
    # the EMA is what was evaluated and kept
    assert {"head.weight"} <= set(torch.load(tmp_path / "alone" / "model.pt", weights_only=True))


def test_fixmatch_runs_stack_when_they_share_the_unlabelled_split():
    fix, _, _ = compose_run(*SSL, "ssl.debias=false")
    debias, _, _ = compose_run(*SSL, "ssl.debias=true", "ssl.tau=0.4", "seed=1")
    other_data, _, _ = compose_run(*SSL, "ssl.unlabelled_n_max=50")
    assert run.stack_key(fix) == run.stack_key(debias) != run.stack_key(other_data)
    assert run.method_name(fix) == "fixmatch" and run.method_name(debias) == "debiaspl"


def fixmatch_members(debias=(False, True), seeds=(0, 1)):
    g = torch.Generator().manual_seed(0)
    unlabelled = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=g)
    hidden = torch.randint(0, 3, (64,), generator=g)
    out = []
    for d, seed in zip(debias, seeds):
        torch.manual_seed(seed)
        loss_fn = FixMatchLoss(build_loss(CELossConfig(), [40, 20, 10]), SSLConfig(debias=d, threshold=0.5))
        model = build_model("cnn_small", 3, 3, [0.5] * 3, [0.25] * 3, make_head=loss_fn.make_head)
        objective = FixMatchObjective(model, loss_fn, unlabelled, hidden, mu=2, batch_size=16, ema_decay=0.9)
        out.append(Member(model, loss_fn, torch.Generator().manual_seed(seed), objective=objective))
    return out


def test_a_vmapped_fixmatch_stack_averages_the_weights_it_trains():
    """The EMA follows each member's weights after every step, also when they live in a vmapped stack (the
    members' modules get them only at the end of the epoch): after one epoch each member's EMA is the loop's,
    to float rounding — not its initial weights."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 256, (70, 3, 16, 16), dtype=torch.uint8, generator=g), torch.arange(70) % 3
    emas, losses = {}, {}
    for stacking in ("loop", "vmap"):
        members = fixmatch_members()
        assert vmap_obstacle(members) is None
        initial = [copy.deepcopy(m.model.state_dict()) for m in members]
        trainer = TrainerConfig(epochs=1, batch_size=16, device="cpu", progress=False, stacking=stacking,
                                bn_recalibration_batches=1)
        engine = fit_stack(members, x, y, trainer_cfg=trainer, optim_cfg=OptimConfig(name="sgd", lr=0.05),
                           augment=True)
        assert engine == stacking
        emas[stacking] = [m.objective.ema.state_dict() for m in members]
        losses[stacking] = [m.history[0]["loss"] for m in members]
    assert losses["vmap"] == pytest.approx(losses["loop"], rel=1e-3)
    for start, loop, vmap in zip(initial, emas["loop"], emas["vmap"]):
        weights = [name for name in loop if name.endswith(".weight")]
        moved = torch.cat([(loop[n] - start[n]).flatten() for n in weights]).norm()
        apart = torch.cat([(vmap[n] - loop[n]).flatten() for n in weights]).norm()
        assert moved > 0 and apart < 0.01 * moved


def test_compare_pseudo_labels_script_names_runs_by_what_differs(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("compare_pseudo_labels", REPO / "scripts" / "compare_pseudo_labels.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    history = [{"epoch": 1, "pseudo_label_counts": [3, 1, 0], "q_hat": [0.4, 0.35, 0.25]}]
    folders = []
    for name, method, debias, profile in (("a", "fixmatch", False, "exp"), ("b", "debiaspl", True, "exp_reversed"),
                                          ("c", "debiaspl", True, "exp_reversed")):
        folders.append(tmp_path / name)
        folders[-1].mkdir()
        config = {"seed": 0, "ssl": {"debias": debias, "unlabelled_profile": profile}}
        (folders[-1] / "metrics.json").write_text(json.dumps({
            "method": method, "config": config, "history": history, "dataset": "synthetic",
            "data": {"class_names": ["a", "b", "c"]}}))
    metrics = [json.loads((f / "metrics.json").read_text()) for f in folders]
    assert script.labels(metrics, folders) == ["fixmatch unlabelled_profile=exp",
                                               "debiaspl unlabelled_profile=exp_reversed (b)",
                                               "debiaspl unlabelled_profile=exp_reversed (c)"]
    monkeypatch.setattr("sys.argv", ["compare_pseudo_labels.py", *map(str, folders), "-o", str(tmp_path / "p.png")])
    script.main()
    assert (tmp_path / "p.png").stat().st_size > 0
