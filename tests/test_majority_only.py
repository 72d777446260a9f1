"""Majority-only baseline: rotation pretext task, rotation-NLL (or feature-Mahalanobis) anomaly score,
threshold on held-out majority images, raw-pixel Gaussian reference; two-class data."""

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from imbalance_lab.baselines import Gaussian, Threshold, mahalanobis_scores, run_majority_only
from imbalance_lab.baselines.majority_only import (
    calibration_split,
    normalised_pixels,
    rotate_all,
    rotation_outputs,
    train_rotation_model,
)
from imbalance_lab.data import build_split
from imbalance_lab.data.split import _channel_stats
from imbalance_lab.losses.ce import CELossConfig
from imbalance_lab.metrics import compute_metrics
from imbalance_lab.schema import (
    MAJORITY_ONLY_SCORES,
    Config,
    ConfigError,
    DataConfig,
    MajorityOnlyConfig,
    ModelConfig,
    OptimConfig,
    SyntheticConfig,
    TrainerConfig,
)
from imbalance_lab.train import Precision

CPU = torch.device("cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Batches of a few dozen 16x16 images gain nothing from intra-op threads, and on a busy 2-core machine
    two threads waiting for each other make a step several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def two_class_config(num_classes: int = 2, score: str = "rotation_nll") -> Config:
    """Synthetic data: each class is its own smooth random pattern plus noise, so the minority is plainly
    unlike the majority, in pixels and in how its rotations look."""
    data = DataConfig(name="synthetic", source="synthetic", classes=list(range(num_classes)), profile="reduce",
                      reduced_classes=[1], imbalance=10,
                      synthetic=SyntheticConfig(num_classes=num_classes, train_per_class=200, test_per_class=50,
                                                image_size=16))
    return Config(data=data, model=ModelConfig(name="cnn_small"), loss=CELossConfig(),
                  optim=OptimConfig(name="adam", lr=1e-3),
                  trainer=TrainerConfig(epochs=3, batch_size=45, device="cpu", progress=False),
                  majority_only=MajorityOnlyConfig(score=score))


def run(cfg: Config):
    split = build_split(cfg.data)
    torch.manual_seed(0)
    pred, extra, history = run_majority_only(cfg, split, CPU, torch.Generator().manual_seed(0))
    return cfg, split, pred, extra["majority_only"], history


@pytest.fixture(scope="module")
def result():
    return run(two_class_config())


@pytest.fixture(scope="module")
def retrained(result):
    """The run's rotation model trained again from scratch with the same seeds, from majority training
    images only; (majority images, fit indices, held-out indices, model, history)."""
    cfg, split, *_ = result
    majority = split.train_x[split.train_y == 0]
    fit_idx, cal_idx = calibration_split(len(majority), 0.1, cfg.seed)
    torch.manual_seed(0)
    mean, std = _channel_stats(majority[fit_idx])
    model, history = train_rotation_model(cfg, torch.from_numpy(majority[fit_idx]), mean, std,
                                          torch.Generator().manual_seed(0))
    return majority, fit_idx, cal_idx, model, history


def test_uses_only_the_majority_and_reports_the_same_metrics(result):
    _, split, pred, extra, history = result
    counts = split.class_counts["train"]
    assert counts == [200, 20]
    assert extra["majority_class"] == split.class_names[0] and extra["minority_class"] == split.class_names[1]
    assert extra["train_images_used"] == counts[0]
    assert (extra["fit_images"], extra["calibration_images"]) == (180, 20)  # calibration_fraction 0.1
    assert extra["minority_train_images_unused"] == counts[1]
    assert extra["threshold_quantile"] == 0.95
    assert extra["score"] == "rotation_nll"
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all(np.isfinite(h["loss"]) and h["images_per_s"] > 0 for h in history)

    assert np.array_equal(pred["y_true"], split.test_y)
    assert set(np.unique(pred["y_pred"])) == {0, 1}  # both outcomes occur: the threshold is not degenerate
    assert np.array_equal(pred["y_pred"], np.where(pred["scores"] > extra["threshold"], 1, 0))
    assert extra["auroc"] == pytest.approx(roc_auc_score(split.test_y == 1, pred["scores"]))
    assert pred["probs"].shape == (len(split.test_y), 2)
    np.testing.assert_allclose(pred["probs"].sum(1), 1.0, rtol=1e-6)
    # the pseudo-probability is on the thresholded prediction's side
    assert np.array_equal(pred["probs"].argmax(1), pred["y_pred"])
    metrics = compute_metrics(pred["y_true"], pred["y_pred"], pred["probs"], counts, split.class_names)
    assert 0.0 <= metrics["macro_f1"] <= 1.0 and metrics["minority_f1"] is not None and metrics["ece"] is not None


def test_detector_separates_a_plainly_different_minority(result):
    _, split, pred, extra, _ = result
    # The rotation network has learned the majority's pattern: it tells the rotations of held-out majority
    # images apart far above chance (0.25), and the minority's pattern gets a higher rotation NLL.
    assert extra["held_out_rotation_accuracy"] > 0.9
    assert extra["auroc"] > 0.9
    assert set(extra["auroc_by_score"]) == set(MAJORITY_ONLY_SCORES)
    assert extra["auroc_by_score"]["rotation_nll"] == extra["auroc"]
    assert np.mean(pred["y_pred"][split.test_y == 1]) > 0.5  # most minority test images are flagged


def test_threshold_is_the_quantile_of_held_out_majority_training_scores(result, retrained):
    _, split, pred, extra, history = result
    majority, fit_idx, cal_idx, model, again = retrained
    # 1 - q of the 20 held-out majority training images lie above the threshold: exactly 1 of them.
    assert extra["calibration_flag_rate"] == pytest.approx(1 / 20)
    assert len(cal_idx) == 20 and not set(fit_idx) & set(cal_idx)
    assert [h["loss"] for h in again] == [h["loss"] for h in history]  # the same rotation model

    def nll(x):
        return rotation_outputs(model, torch.from_numpy(x), Precision())[1]

    assert extra["threshold"] == pytest.approx(float(np.quantile(nll(majority[cal_idx]), 0.95)), rel=1e-9)
    np.testing.assert_allclose(nll(split.test_x), pred["scores"], rtol=1e-9)


def test_batchnorm_statistics_are_those_of_the_four_rotations(retrained):
    majority, fit_idx, _, model, _ = retrained
    # The test config's 20 recalibration batches of 45 cover all 180 fit images, so the first BatchNorm's
    # running mean is the mean of the first convolution's output over the fit images in all four rotations:
    # the inputs that are scored, not the unrotated images alone.
    conv, norm = model.backbone.features[0][0], model.backbone.features[0][1]

    def conv_mean(x):
        with torch.no_grad():
            return conv((Precision().inputs(x) - model.mean) / model.std).mean(dim=(0, 2, 3))

    x = torch.from_numpy(majority[fit_idx])
    rotated = conv_mean(rotate_all(x)[0])
    torch.testing.assert_close(norm.running_mean, rotated, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(norm.running_mean, conv_mean(x), rtol=1e-2, atol=1e-3)


def test_rotation_nll_matches_a_hand_computation():
    class PixelLogits(torch.nn.Module):
        """Logit k = 10 x pixel k (row-major) of a 2x2 image."""

        def features(self, x):
            return 10 * x.flatten(1)

        def head(self, f):
            return f

    images = torch.tensor([[[[0, 51], [102, 255]]], [[[255, 0], [0, 0]]], [[[10, 20], [30, 40]]]], dtype=torch.uint8)
    features, nll, accuracy = rotation_outputs(PixelLogits(), images, Precision(), batch_size=2)
    for img, f, s, acc in zip(images, features, nll, accuracy):
        (a, b), (c, d) = (10 * img[0].double() / 255).tolist()
        # rot90 by k (counterclockwise) of [[a, b], [c, d]], row-major: k=0 a b c d; 1: b d a c; 2: d c b a;
        # 3: c a d b. The logit of the true rotation k is entry k of that: a, d, b, b.
        true_logits = [a, d, b, b]
        log_z = np.log(np.sum(np.exp([a, b, c, d])))  # the same four logits, permuted, under each rotation
        assert s == pytest.approx(sum(log_z - t for t in true_logits), rel=1e-5)
        rotated = [[a, b, c, d], [b, d, a, c], [d, c, b, a], [c, a, d, b]]
        assert acc == np.mean([np.argmax(r) == k for k, r in enumerate(rotated)])
        np.testing.assert_allclose(f, [a, b, c, d], rtol=1e-6)  # features of the unrotated image


def test_pixel_gaussian_reference_is_recorded(result):
    cfg, split, pred, extra, _ = result
    pixels = extra["pixel_gaussian"]
    # Recomputed from its definition with sklearn's own estimator: Ledoit-Wolf Gaussian of the normalised
    # pixels of the majority fit images, threshold at the 0.95-quantile of the held-out majority images.
    majority = split.train_x[split.train_y == 0]
    fit_idx, cal_idx = calibration_split(len(majority), 0.1, cfg.seed)
    mean, std = _channel_stats(majority[fit_idx])
    lw = LedoitWolf().fit(normalised_pixels(majority[fit_idx], mean, std))

    def scores(x):
        return mahalanobis_scores(normalised_pixels(x, mean, std), lw.location_, lw.precision_)

    threshold = np.quantile(scores(majority[cal_idx]), 0.95)
    test_scores = scores(split.test_x)
    assert pixels["dim"] == 3 * 16 * 16
    assert pixels["threshold"] == pytest.approx(threshold, rel=1e-6)
    assert pixels["auroc"] == pytest.approx(roc_auc_score(split.test_y == 1, test_scores), abs=1e-6)
    y_pred = (test_scores > threshold).astype(int)
    metrics = compute_metrics(split.test_y, y_pred, None, split.class_counts["train"], split.class_names)
    assert pixels["macro_f1"] == pytest.approx(metrics["macro_f1"])
    assert pixels["minority_f1"] == pytest.approx(metrics["minority_f1"])
    assert pixels["auroc"] > 0.9  # different patterns: plain in pixel space too
    assert not np.array_equal(pred["scores"], test_scores)  # the run's predictions are the detector's


def test_feature_mahalanobis_score_is_a_setting(result):
    *_, extra, _ = result
    *_, pred, other, _ = run(two_class_config(score="feature_mahalanobis"))
    assert other["score"] == "feature_mahalanobis"
    # same seeds, same rotation model: only the score that decides differs
    assert other["auroc_by_score"] == pytest.approx(extra["auroc_by_score"])
    assert other["auroc"] == other["auroc_by_score"]["feature_mahalanobis"]
    assert other["calibration_flag_rate"] == pytest.approx(1 / 20)
    assert np.array_equal(pred["y_pred"], np.where(pred["scores"] > other["threshold"], 1, 0))


def test_gaussian_and_threshold_match_their_definitions():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) + 3.0
    gaussian = Gaussian.fit(vectors)
    lw = LedoitWolf().fit(vectors)
    np.testing.assert_allclose(gaussian.precision, lw.precision_, rtol=1e-8)
    assert gaussian.shrinkage == pytest.approx(lw.shrinkage_) and 0.0 <= gaussian.shrinkage <= 1.0
    d = vectors[:7] - gaussian.mean
    np.testing.assert_allclose(gaussian.scores(vectors[:7]), np.sqrt([v @ gaussian.precision @ v for v in d]))
    held_out = gaussian.scores(vectors[:50] + 0.5)
    threshold = Threshold.of(held_out, 0.9)
    assert threshold.value == np.quantile(held_out, 0.9) and threshold.scale == pytest.approx(held_out.std())
    assert threshold.anomaly_probability(np.array([threshold.value]))[0] == pytest.approx(0.5)
    # equal vectors: a zero covariance that no shrinkage rescues, still a usable (pseudo-inverse) Gaussian
    flat = Gaussian.fit(np.ones((10, 3)))
    np.testing.assert_array_equal(flat.precision, 0.0)
    np.testing.assert_array_equal(flat.scores(np.ones((2, 3))), 0.0)


def test_rotations_are_labelled_by_rot90_count():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.uint8).view(2, 1, 3, 3)
    images, labels = rotate_all(x)
    assert images.shape == (8, 1, 3, 3) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for img, k, src in zip(images, labels, x.repeat(4, 1, 1, 1)):
        assert torch.equal(img, torch.rot90(src, int(k), dims=(1, 2)))


def test_more_than_two_classes_is_a_config_error_naming_method():
    cfg = two_class_config(num_classes=3)
    split = build_split(cfg.data)
    with pytest.raises(ConfigError, match=r"^method='majority_only'.*two-class.*3 classes") as info:
        run_majority_only(cfg, split, CPU, torch.Generator().manual_seed(0))
    assert info.value.key == "method"


def test_bad_settings_are_config_errors():
    cfg = two_class_config()
    split = build_split(cfg.data)
    with pytest.raises(ConfigError, match="threshold_quantile"):
        run_majority_only(cfg, split, CPU, torch.Generator().manual_seed(0), threshold_quantile=1.0)
    with pytest.raises(ConfigError, match=r"^majority_only.score='auroc' .*rotation_nll, feature_mahalanobis"):
        dataclasses.replace(cfg.majority_only, score="auroc")
