"""Imbalance-aware losses (cb, logit_adjusted, ldam, affinity, debiased) and deferred re-weighting against
hand computations on small tensors. Expected values are computed here from the formulas in the loss modules' docstrings."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imbalance_lab.losses import build_loss
from imbalance_lab.losses.affinity import AffinityHead, AffinityLossConfig
from imbalance_lab.losses.cb import CBLossConfig
from imbalance_lab.losses.ce import CELossConfig
from imbalance_lab.losses.debiased import DebiasedLossConfig
from imbalance_lab.losses.ldam import LDAMLossConfig, NormedLinear
from imbalance_lab.losses.logit_adjusted import LogitAdjustedLossConfig
from imbalance_lab.models import build_model
from imbalance_lab.schema import ConfigError, LossConfig
from imbalance_lab.train import Precision
from imbalance_lab.train.stack import param_groups

COUNTS = [100, 10, 1]
LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-3.0, 4.0, 1.0], [10.0, -10.0, 0.0]])
TARGETS = torch.tensor([0, 2, 1, 1])


def cb_weights_by_hand(counts, beta):
    w = [(1 - beta) / (1 - beta ** n) for n in counts]
    return [x * len(w) / sum(w) for x in w]


def ce_by_hand(z, y):
    return -z[y] + math.log(sum(math.exp(v) for v in z))


# ----------------------------------------------------------------------------- cb
@pytest.mark.parametrize("beta", [0.9, 0.999])
def test_cb_weights_hand_computed_and_sum_to_c(beta):
    expected = cb_weights_by_hand(COUNTS, beta)
    weights = build_loss(CBLossConfig(beta=beta), COUNTS).weights
    assert weights.tolist() == pytest.approx(expected, rel=1e-6)
    assert sum(expected) == pytest.approx(3.0) and weights.sum().item() == pytest.approx(3.0, rel=1e-6)
    # rarer classes weigh more
    assert expected[0] < expected[1] < expected[2]


def test_cb_weights_beta_0_9_literal_values():
    # β = 0.9: raw weights 0.1/(1 − 0.9^n) = (0.100003, 0.153534, 1), times 3/sum
    weights = build_loss(CBLossConfig(beta=0.9), COUNTS).weights.tolist()
    assert weights == pytest.approx([0.23931, 0.36737, 2.39332], abs=1e-4)


def test_cb_softmax_hand_value():
    beta = 0.99
    w = cb_weights_by_hand(COUNTS, beta)
    expected = sum(w[y] * ce_by_hand(z, y) for z, y in zip(LOGITS.tolist(), TARGETS.tolist())) / len(TARGETS)
    loss = build_loss(CBLossConfig(beta=beta, base="softmax"), COUNTS)(LOGITS, TARGETS)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def sigmoid_terms_by_hand(z, y, gamma):
    """Σ_c (1 − p_t)^γ · (−log p_t) for one sample, p_t = σ(z_c) if c = y else 1 − σ(z_c)."""
    total = 0.0
    for c, v in enumerate(z):
        p = 1 / (1 + math.exp(-v))
        p_t = p if c == y else 1 - p
        total += (1 - p_t) ** gamma * -math.log(p_t)
    return total


def test_cb_beta0_equals_unweighted_base():
    logits = LOGITS.clamp(-5, 5)  # keep 1 − σ(z) representable for the hand computation in float64
    targets = TARGETS
    # softmax: exactly CE
    cb = build_loss(CBLossConfig(beta=0.0, base="softmax"), COUNTS)
    assert cb.weights.tolist() == [1.0, 1.0, 1.0]
    assert torch.equal(cb(logits, targets), build_loss(CELossConfig(), COUNTS)(logits, targets))
    torch.testing.assert_close(cb(logits, targets), F.cross_entropy(logits, targets), rtol=1e-6, atol=1e-7)
    # sigmoid: mean over the batch of Σ_c BCE(z_c, 1[c = y])
    onehot = F.one_hot(targets, 3).float()
    bce_sum = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").sum(1).mean()
    sig = build_loss(CBLossConfig(beta=0.0, base="sigmoid"), COUNTS)(logits, targets)
    torch.testing.assert_close(sig, bce_sum)
    by_hand = [sigmoid_terms_by_hand(z, y, 0.0) for z, y in zip(logits.tolist(), targets.tolist())]
    assert sig.item() == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-5)
    # focal: mean over the batch of Σ_c (1 − p_t)^γ · BCE
    for gamma in (0.5, 2.0):
        foc = build_loss(CBLossConfig(beta=0.0, base="focal", gamma=gamma), COUNTS)(logits, targets)
        by_hand = [sigmoid_terms_by_hand(z, y, gamma) for z, y in zip(logits.tolist(), targets.tolist())]
        assert foc.item() == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-5)


def test_cb_focal_gamma0_equals_sigmoid_and_weights_apply():
    sig = build_loss(CBLossConfig(beta=0.999, base="sigmoid"), COUNTS)(LOGITS, TARGETS)
    foc = build_loss(CBLossConfig(beta=0.999, base="focal", gamma=0.0), COUNTS)(LOGITS, TARGETS)
    torch.testing.assert_close(foc, sig)
    w = cb_weights_by_hand(COUNTS, 0.999)
    logits = LOGITS.clamp(-5, 5)
    by_hand = [w[y] * sigmoid_terms_by_hand(z, y, 2.0) for z, y in zip(logits.tolist(), TARGETS.tolist())]
    foc2 = build_loss(CBLossConfig(beta=0.999, base="focal", gamma=2.0), COUNTS)(logits, TARGETS)
    assert foc2.item() == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-5)


def test_cb_focal_stable_on_large_logits():
    logits = torch.tensor([[80.0, -80.0, 0.0]], requires_grad=True)
    loss = build_loss(CBLossConfig(base="focal", gamma=0.5), COUNTS)(logits, torch.tensor([1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("base", ["sigmoid", "focal"])
def test_cb_sigmoid_head_bias_prior_and_no_weight_decay(base):
    # Cui et al.'s code: π = 1/C, bias −log(C − 1): every class starts at σ(z) = 1/C
    head = build_loss(CBLossConfig(base=base), COUNTS).make_head(8, 3)
    assert isinstance(head, torch.nn.Linear)
    torch.testing.assert_close(head.bias.detach(), torch.full((3,), -math.log(2.0)))
    assert torch.sigmoid(head.bias).detach().tolist() == pytest.approx([1 / 3] * 3, rel=1e-6)
    for classes, bias in ((10, -math.log(9.0)), (100, -math.log(99.0)), (2, 0.0)):
        wide = build_loss(CBLossConfig(base=base), [5] * classes).make_head(8, classes)
        torch.testing.assert_close(wide.bias.detach(), torch.full((classes,), bias), atol=1e-6, rtol=1e-6)
    assert getattr(head.bias, "no_weight_decay", False) is True
    assert not getattr(head.weight, "no_weight_decay", False)


def test_cb_sigmoid_bias_in_no_decay_group_of_the_optimiser():
    loss = build_loss(CBLossConfig(base="sigmoid"), [20, 2])
    model = build_model("cnn_small", 3, 2, [0.5] * 3, [0.25] * 3, make_head=loss.make_head)
    _, no_decay = param_groups(model, loss, weight_decay=5e-4)
    assert [id(p) for p in no_decay["params"]] == [id(model.head.bias)]
    assert no_decay["weight_decay"] == 0.0


# ----------------------------------------------------------------------------- logit adjustment
def test_logit_adjusted_tau0_equals_ce():
    loss = build_loss(LogitAdjustedLossConfig(tau=0.0), COUNTS)(LOGITS, TARGETS)
    torch.testing.assert_close(loss, F.cross_entropy(LOGITS, TARGETS), rtol=1e-6, atol=1e-7)


def test_logit_adjusted_tau1_hand_value_is_balanced_softmax():
    # counts (90, 10): π = (0.9, 0.1); z = (1, 0), y = 1
    # Balanced Softmax: −log(π_1 e^{z_1} / (π_0 e^{z_0} + π_1 e^{z_1})) = −log(0.1 / (0.9 e + 0.1))
    expected = -math.log(0.1 / (0.9 * math.e + 0.1))
    loss = build_loss(LogitAdjustedLossConfig(tau=1.0), [90, 10])(torch.tensor([[1.0, 0.0]]), torch.tensor([1]))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_logit_adjusted_posthoc_trains_ce_and_shifts_scores():
    tau = 0.5
    loss_fn = build_loss(LogitAdjustedLossConfig(tau=tau, posthoc=True), [90, 10])
    z = torch.tensor([[1.0, 0.0], [0.2, 0.1]])
    y = torch.tensor([1, 0])
    torch.testing.assert_close(loss_fn(z, y), F.cross_entropy(z, y))
    expected = z - tau * torch.tensor([math.log(0.9), math.log(0.1)])
    torch.testing.assert_close(loss_fn.scores(z), expected)
    # the rare class wins the second sample after the shift (0.2 − 0.5 log 0.9 < 0.1 − 0.5 log 0.1)
    assert loss_fn.scores(z).argmax(1).tolist() == [1, 1]
    # not post-hoc: scores are the raw logits
    assert torch.equal(build_loss(LogitAdjustedLossConfig(tau=tau), [90, 10]).scores(z), z)


# ----------------------------------------------------------------------------- DRW
def test_drw_ce_switches_to_class_balanced_weights_at_drw_epoch():
    loss_fn = build_loss(CELossConfig(drw_epoch=3, drw_beta=0.999, drw_reduction="mean"), COUNTS)
    plain = F.cross_entropy(LOGITS, TARGETS)
    for epoch in (0, 1):  # 1-based epochs 1, 2
        loss_fn.start_epoch(epoch)
        torch.testing.assert_close(loss_fn(LOGITS, TARGETS), plain, rtol=1e-6, atol=1e-7)
    w = cb_weights_by_hand(COUNTS, 0.999)
    expected = sum(w[y] * ce_by_hand(z, y) for z, y in zip(LOGITS.tolist(), TARGETS.tolist())) / len(TARGETS)
    for epoch in (2, 5):  # 1-based epochs 3, 6
        loss_fn.start_epoch(epoch)
        assert loss_fn(LOGITS, TARGETS).item() == pytest.approx(expected, rel=1e-6)


def test_drw_by_default_reduces_as_cao_et_al_do():
    """Σ w l / Σ w: F.cross_entropy(weight=w), as Cao et al.'s LDAM-DRW code; for LDAM on its margin logits."""
    w = torch.tensor(cb_weights_by_hand(COUNTS, 0.9999))
    ce = build_loss(CELossConfig(drw_epoch=1), COUNTS)
    ce.start_epoch(0)
    torch.testing.assert_close(ce(LOGITS, TARGETS), F.cross_entropy(LOGITS, TARGETS, weight=w), rtol=1e-6, atol=1e-7)
    ldam = build_loss(LDAMLossConfig(drw_epoch=1), COUNTS)
    ldam.start_epoch(0)
    cos = torch.tensor([[0.2, 0.1, -0.3], [0.5, 0.4, 0.45], [-0.1, 0.9, 0.0], [0.0, 0.3, 0.2]])
    margins = torch.tensor([0.5 * n ** -0.25 for n in COUNTS])
    z = 30.0 * (cos - margins[TARGETS, None] * F.one_hot(TARGETS, 3))
    torch.testing.assert_close(ldam(cos, TARGETS), F.cross_entropy(z, TARGETS, weight=w), rtol=1e-5, atol=1e-6)


def test_drw_never_by_default():
    loss_fn = build_loss(CELossConfig(), COUNTS)
    loss_fn.start_epoch(1000)
    torch.testing.assert_close(loss_fn(LOGITS, TARGETS), F.cross_entropy(LOGITS, TARGETS), rtol=1e-6, atol=1e-7)


def ldam_by_hand(cos, y, margins, s):
    z = [s * (c - (margins[y] if j == y else 0.0)) for j, c in enumerate(cos)]
    return ce_by_hand(z, y)


def test_drw_ldam():
    cos = torch.tensor([[0.2, 0.1, -0.3], [0.5, 0.4, 0.45], [-0.1, 0.9, 0.0], [0.0, 0.3, 0.2]])
    margins = [0.5 * n ** -0.25 for n in COUNTS]  # max margin 0.5 at n = 1
    per_sample = [ldam_by_hand(c, y, margins, 30.0) for c, y in zip(cos.tolist(), TARGETS.tolist())]
    loss_fn = build_loss(LDAMLossConfig(drw_epoch=2, drw_reduction="mean"), COUNTS)
    loss_fn.start_epoch(0)
    assert loss_fn(cos, TARGETS).item() == pytest.approx(sum(per_sample) / 4, rel=1e-5)
    loss_fn.start_epoch(1)
    w = cb_weights_by_hand(COUNTS, 0.9999)
    expected = sum(w[y] * v for y, v in zip(TARGETS.tolist(), per_sample)) / 4
    assert loss_fn(cos, TARGETS).item() == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- ldam
def test_ldam_margins_proportional_to_n_to_minus_quarter():
    margins = build_loss(LDAMLossConfig(), COUNTS).margins.tolist()
    assert max(margins) == pytest.approx(0.5)
    assert margins == pytest.approx([0.5 / 100 ** 0.25, 0.5 / 10 ** 0.25, 0.5], rel=1e-6)
    # Δ_c · n_c^{1/4} is the same constant for every class
    consts = [m * n ** 0.25 for m, n in zip(margins, COUNTS)]
    assert consts == pytest.approx([consts[0]] * 3, rel=1e-6)


def test_ldam_hand_value_s30():
    # two classes, counts (16, 1): Δ = (0.5 · 16^(−1/4), 0.5) = (0.25, 0.5); cos = (0.6, 0.2), y = 0
    # z = 30 · (0.6 − 0.25, 0.2) = (10.5, 6); L = −log(e^10.5 / (e^10.5 + e^6))
    expected = -10.5 + math.log(math.exp(10.5) + math.exp(6.0))
    loss = build_loss(LDAMLossConfig(), [16, 1])(torch.tensor([[0.6, 0.2]]), torch.tensor([0]))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ldam_head_outputs_cosines():
    loss_fn = build_loss(LDAMLossConfig(), [16, 1])
    head = loss_fn.make_head(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 1.0]]))  # columns: class vectors (1,0), (1,1)
    f = torch.tensor([[3.0, 4.0]])
    expected = torch.tensor([[3 / 5, 7 / (5 * math.sqrt(2))]])
    torch.testing.assert_close(head(f), expected)
    assert torch.equal(loss_fn.scores(head(f)), head(f))


# ----------------------------------------------------------------------------- affinity
def affinity_loss_and_head(m, sigma=2.0, lam=0.5, reg_weight=1.0, num_classes=2):
    loss_fn = build_loss(AffinityLossConfig(m=m, sigma=sigma, lam=lam, reg_weight=reg_weight),
                         [10] * num_classes)
    head = loss_fn.make_head(2, num_classes)
    return loss_fn, head


def test_affinity_distances_m1():
    _, head = affinity_loss_and_head(m=1)
    with torch.no_grad():
        head.centres.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    f = torch.tensor([[0.5, 0.0], [2.0, 1.0]])
    # ‖f − w‖²: sample 0 → (0.25, 1.25); sample 1 → (5, 1); σ = 2
    expected = torch.tensor([[math.exp(-0.125), math.exp(-0.625)], [math.exp(-2.5), math.exp(-0.5)]])
    torch.testing.assert_close(head(f), expected)


def test_affinity_distances_m2_take_the_nearest_centre_of_each_class():
    _, head = affinity_loss_and_head(m=2)
    with torch.no_grad():  # rows 0, 1: class 0; rows 2, 3: class 1
        head.centres.copy_(torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, 1.0], [0.0, -2.0]]))
    f = torch.tensor([[2.5, 0.0], [0.0, -1.5]])
    sq = lambda a, b: (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2
    centres = [(0.0, 0.0), (3.0, 0.0), (1.0, 1.0), (0.0, -2.0)]
    expected = [[max(math.exp(-sq(x, centres[2 * j + t]) / 2.0) for t in range(2)) for j in range(2)]
                for x in f.tolist()]
    assert head(f).tolist() == [pytest.approx(row, rel=1e-6) for row in expected]
    # sample 0 is nearest to the second class-0 centre (3, 0): d_0 = exp(−0.25/2)
    assert head(f)[0, 0].item() == pytest.approx(math.exp(-0.125), rel=1e-6)


def test_affinity_margin_term_regulariser_and_total():
    lam = 0.5
    loss_fn, head = affinity_loss_and_head(m=2, lam=lam, reg_weight=0.3, num_classes=3)
    centres = np.array([[0.0, 0.0], [3.0, 0.0], [1.0, 1.0], [0.0, -2.0], [-1.0, 2.0], [2.0, 2.0]])
    with torch.no_grad():
        head.centres.copy_(torch.tensor(centres, dtype=torch.float32))
    d = torch.tensor([[0.9, 0.2, 0.6], [0.1, 0.3, 0.05]])
    y = torch.tensor([0, 2])
    # sample 0: max(0, .5+.2−.9) + max(0, .5+.6−.9) = 0 + 0.2; sample 1: (.5+.1−.05) + (.5+.3−.05) = 1.3
    margin = (0.2 + 1.3) / 2
    pairs = [((centres[k] - centres[j]) ** 2).sum() for k in range(6) for j in range(k + 1, 6)]
    reg = float(np.var(pairs))
    assert head.centre_spread().item() == pytest.approx(reg, rel=1e-5)
    assert loss_fn(d, y).item() == pytest.approx(margin + 0.3 * reg, rel=1e-5)


def test_affinity_centres_start_as_the_keras_reimplementation_draws_them():
    """he_normal over a (C, m, D) weight: fan-in C·m, a normal truncated at 2 sd with std √(2/(C·m))."""
    torch.manual_seed(0)
    centres = AffinityHead(128, 10, m=1).centres.detach()
    assert centres.std().item() == pytest.approx(math.sqrt(2 / 10), rel=0.05)
    bound = 2 * math.sqrt(2 / 10) / 0.87962566103423978
    assert centres.abs().max().item() <= bound
    features = AffinityHead(128, 10, m=1, init="features").centres.detach()
    assert features.std().item() == pytest.approx(math.sqrt(2 / 128), rel=0.05)


def test_affinity_gradients_reach_the_centres():
    loss_fn, head = affinity_loss_and_head(m=2, num_classes=3)
    f = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    loss = loss_fn(head(f), torch.tensor([0, 1, 2, 0, 1]))
    loss.backward()
    assert head.centres.grad is not None and head.centres.grad.abs().sum() > 0
    # the loss holds the very head module it built, so the trainer sees the centres once
    assert loss_fn.head is head
    assert sum(p is head.centres for p in loss_fn.parameters()) == 1


def test_affinity_shared_head_counted_once_by_the_optimiser():
    loss_fn = build_loss(AffinityLossConfig(m=2), [30, 3])
    model = build_model("cnn_small", 3, 2, [0.5] * 3, [0.25] * 3, embedding_dim=2, make_head=loss_fn.make_head)
    assert model.head is loss_fn.head
    groups = param_groups(model, loss_fn, weight_decay=0.0)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


def test_affinity_prediction_is_argmax_d_and_probabilities_are_normalised_d():
    loss_fn, _ = affinity_loss_and_head(m=1, num_classes=3)
    d = torch.tensor([[0.9, 0.2, 0.6], [0.1, 0.3, 0.05], [1e-40, 0.0, 1e-3]])
    scores = loss_fn.scores(d)
    assert scores.argmax(1).tolist() == d.argmax(1).tolist() == [0, 1, 2]
    torch.testing.assert_close(scores.softmax(1)[:2], d[:2] / d[:2].sum(1, keepdim=True))
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("context", [lambda: torch.autocast("cpu", dtype=torch.bfloat16),
                                     lambda: Precision(amp=True).compute()], ids=["autocast", "bf16_policy"])
def test_the_affinity_and_cosine_heads_compute_in_float32_under_bf16(context):
    _, head = affinity_loss_and_head(m=1)
    features = torch.randn(4, 2)
    with context():
        out = head(features.bfloat16())
        cosines = NormedLinear(2, 3)(features.bfloat16())
    assert out.dtype == cosines.dtype == torch.float32
    torch.testing.assert_close(out, head(features.bfloat16().float()))


# ----------------------------------------------------------------------------- debiased
def test_debiased_q_hat_update_and_loss():
    mu, lam = 0.9, 0.5
    loss_fn = build_loss(DebiasedLossConfig(lam=lam, momentum=mu), COUNTS)
    assert loss_fn.q_hat.tolist() == pytest.approx([1 / 3] * 3)
    loss = loss_fn(LOGITS, TARGETS)
    # q̂ after = μ · 1/3 + (1 − μ) · batch mean of softmax(z)
    batch_mean = [sum(math.exp(z[c]) / sum(math.exp(v) for v in z) for z in LOGITS.tolist()) / 4 for c in range(3)]
    q_after = [mu / 3 + (1 - mu) * b for b in batch_mean]
    assert loss_fn.q_hat.tolist() == pytest.approx(q_after, rel=1e-6)
    # the loss uses q̂ AFTER this batch's update: CE(z + λ log q̂_after, y)
    expected = sum(ce_by_hand([v + lam * math.log(q) for v, q in zip(z, q_after)], y)
                   for z, y in zip(LOGITS.tolist(), TARGETS.tolist())) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_debiased_no_update_under_no_grad_and_history():
    loss_fn = build_loss(DebiasedLossConfig(momentum=0.5), COUNTS)
    loss_fn.start_epoch(0)
    with torch.no_grad():
        loss_fn(LOGITS, TARGETS)
    assert loss_fn.q_hat.tolist() == pytest.approx([1 / 3] * 3)
    loss_fn(LOGITS, TARGETS)
    loss_fn.start_epoch(1)
    metrics = loss_fn.extra_metrics()
    assert metrics["q_hat_history"][0] == pytest.approx([1 / 3] * 3)
    assert metrics["q_hat_history"][1] == pytest.approx(loss_fn.q_hat.tolist())
    assert metrics["q_hat_final"] == pytest.approx(loss_fn.q_hat.tolist())
    assert sum(metrics["q_hat_final"]) == pytest.approx(1.0)


def test_debiased_scores():
    z = torch.tensor([[1.0, 0.0, 0.5]])
    plain = build_loss(DebiasedLossConfig(), COUNTS)
    assert torch.equal(plain.scores(z), z)
    deb = build_loss(DebiasedLossConfig(lam=0.5, debias_scores=True), COUNTS)
    with torch.no_grad():
        deb.q_hat.copy_(torch.tensor([0.5, 0.25, 0.25]))
    expected = torch.tensor([[1.0 - 0.5 * math.log(0.5), -0.5 * math.log(0.25), 0.5 - 0.5 * math.log(0.25)]])
    torch.testing.assert_close(deb.scores(z), expected)


# ----------------------------------------------------------------------------- bf16 logits
@pytest.mark.parametrize("cfg", [CBLossConfig(base="focal"), LDAMLossConfig(), LogitAdjustedLossConfig(),
                                 DebiasedLossConfig()], ids=lambda c: c.name)
def test_bf16_logits_give_a_float32_loss(cfg):
    loss = build_loss(cfg, COUNTS)(LOGITS.clamp(-1, 1).bfloat16(), TARGETS)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


# ----------------------------------------------------------------------------- schema checks
@pytest.mark.parametrize("make, key, value", [
    (lambda: CBLossConfig(beta=1.0), "loss.beta", 1.0),
    (lambda: CBLossConfig(beta=-0.1), "loss.beta", -0.1),
    (lambda: CBLossConfig(base="softmax2"), "loss.base", "softmax2"),
    (lambda: CBLossConfig(gamma=-1.0), "loss.gamma", -1.0),
    (lambda: AffinityLossConfig(sigma=0.0), "loss.sigma", 0.0),
    (lambda: AffinityLossConfig(m=0), "loss.m", 0),
    (lambda: AffinityLossConfig(lam=-0.5), "loss.lam", -0.5),
    (lambda: AffinityLossConfig(reg_weight=-1.0), "loss.reg_weight", -1.0),
    (lambda: LogitAdjustedLossConfig(tau=-1.0), "loss.tau", -1.0),
    (lambda: LDAMLossConfig(max_margin=0.0), "loss.max_margin", 0.0),
    (lambda: LDAMLossConfig(s=0.0), "loss.s", 0.0),
    (lambda: DebiasedLossConfig(momentum=1.0), "loss.momentum", 1.0),
    (lambda: DebiasedLossConfig(lam=-0.1), "loss.lam", -0.1),
    (lambda: CELossConfig(drw_epoch=0), "loss.drw_epoch", 0),
    (lambda: LDAMLossConfig(drw_beta=1.0), "loss.drw_beta", 1.0),
])
def test_schema_range_errors_name_the_key(make, key, value):
    with pytest.raises(ConfigError) as err:
        make()
    assert err.value.key == key and err.value.value == value
    assert str(err.value).startswith(f"{key}={value!r} is not allowed: ")


def test_defaults():
    assert LossConfig.drw_epoch is None and LossConfig.drw_beta == 0.9999
    assert LossConfig.drw_reduction == "weighted_mean"
    cb, aff = CBLossConfig(), AffinityLossConfig()
    assert (cb.beta, cb.base, cb.gamma) == (0.9999, "softmax", 1.0)
    assert (aff.m, aff.sigma, aff.lam, aff.reg_weight) == (1, 10.0, 0.75, 1.0)
    assert (LogitAdjustedLossConfig().tau, LogitAdjustedLossConfig().posthoc) == (1.0, False)
    assert (LDAMLossConfig().max_margin, LDAMLossConfig().s) == (0.5, 30.0)
    assert (DebiasedLossConfig().lam, DebiasedLossConfig().momentum) == (0.5, 0.999)
