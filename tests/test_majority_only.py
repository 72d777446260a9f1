"""Majority-only baseline: rotation pretext task + Mahalanobis score, two-class data."""

import numpy as np
import pytest
import torch

from imbalance_lab.baselines import MahalanobisDetector, mahalanobis_scores, run_majority_only
from imbalance_lab.baselines.majority_only import (
    calibration_split,
    extract_features,
    rotate_all,
    train_rotation_model,
)
from imbalance_lab.data import build_split
from imbalance_lab.data.split import _channel_stats
from imbalance_lab.losses.ce import CELossConfig
from imbalance_lab.metrics import compute_metrics
from imbalance_lab.schema import (
    Config,
    ConfigError,
    DataConfig,
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


def two_class_config(num_classes: int = 2) -> Config:
    data = DataConfig(name="synthetic", source="synthetic", classes=list(range(num_classes)), profile="reduce",
                      reduced_classes=[1], imbalance=10,
                      synthetic=SyntheticConfig(num_classes=num_classes, train_per_class=200, test_per_class=50,
                                                image_size=16))
    return Config(data=data, model=ModelConfig(name="cnn_small"), loss=CELossConfig(),
                  optim=OptimConfig(name="adam", lr=1e-3),
                  trainer=TrainerConfig(epochs=2, batch_size=45, device="cpu", progress=False))


@pytest.fixture(scope="module")
def result():
    cfg = two_class_config()
    split = build_split(cfg.data)
    torch.manual_seed(0)
    pred, extra, history = run_majority_only(cfg, split, CPU, torch.Generator().manual_seed(0))
    return cfg, split, pred, extra["majority_only"], history


def test_uses_only_the_majority_and_reports_the_same_metrics(result):
    _, split, pred, extra, history = result
    counts = split.class_counts["train"]
    assert counts == [200, 20]
    assert extra["majority_class"] == split.class_names[0] and extra["minority_class"] == split.class_names[1]
    assert extra["train_images_used"] == counts[0]
    assert (extra["fit_images"], extra["calibration_images"]) == (180, 20)  # calibration_fraction 0.1
    assert extra["minority_train_images_unused"] == counts[1]
    assert extra["threshold_quantile"] == 0.95
    assert 0.0 <= extra["auroc"] <= 1.0
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["loss"]) and h["images_per_s"] > 0 for h in history)

    assert np.array_equal(pred["y_true"], split.test_y)
    assert set(np.unique(pred["y_pred"])) == {0, 1}  # both outcomes occur: the threshold is not degenerate
    assert np.array_equal(pred["y_pred"], np.where(pred["scores"] > extra["threshold"], 1, 0))
    assert pred["probs"].shape == (len(split.test_y), 2)
    np.testing.assert_allclose(pred["probs"].sum(1), 1.0, rtol=1e-6)
    # the pseudo-probability is on the thresholded prediction's side
    assert np.array_equal(pred["probs"].argmax(1), pred["y_pred"])
    metrics = compute_metrics(pred["y_true"], pred["y_pred"], pred["probs"], counts, split.class_names)
    assert 0.0 <= metrics["macro_f1"] <= 1.0 and metrics["minority_f1"] is not None and metrics["ece"] is not None


def test_threshold_is_the_quantile_of_held_out_majority_training_scores(result):
    cfg, split, pred, extra, history = result
    # 1 - q of the 20 held-out majority training images lie above the threshold: exactly 1 of them.
    assert extra["calibration_flag_rate"] == pytest.approx(1 / 20)
    # Recompute from scratch with the same seeds, from majority training images only: same rotation model,
    # same features, same threshold.
    majority = split.train_x[split.train_y == 0]
    fit_idx, cal_idx = calibration_split(len(majority), 0.1, cfg.seed)
    assert len(cal_idx) == 20 and not set(fit_idx) & set(cal_idx)
    torch.manual_seed(0)
    mean, std = _channel_stats(majority[fit_idx])
    model, again = train_rotation_model(cfg, torch.from_numpy(majority[fit_idx]), mean, std,
                                        torch.Generator().manual_seed(0))
    assert [h["loss"] for h in again] == [h["loss"] for h in history]

    def features(x):
        return extract_features(model, torch.from_numpy(x), Precision())

    detector = MahalanobisDetector.fit(features(majority[fit_idx]), 0.95)
    cal_scores = detector.scores(features(majority[cal_idx]))
    assert extra["threshold"] == pytest.approx(float(np.quantile(cal_scores, 0.95)), rel=1e-9)
    np.testing.assert_allclose(detector.scores(features(split.test_x)), pred["scores"], rtol=1e-9)


def test_mahalanobis_matches_the_definition():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) + 3.0
    detector = MahalanobisDetector.fit(features, 0.9)  # no held-out part: in-sample threshold
    d = features[:7] - detector.mean
    expected = np.sqrt([v @ detector.precision @ v for v in d])
    np.testing.assert_allclose(mahalanobis_scores(features[:7], detector.mean, detector.precision), expected)
    assert detector.threshold == np.quantile(detector.scores(features), 0.9)
    held_out = features[:50] + 0.5
    calibrated = MahalanobisDetector.fit(features, 0.9, held_out)
    np.testing.assert_array_equal(calibrated.mean, detector.mean)
    assert calibrated.threshold == np.quantile(calibrated.scores(held_out), 0.9) > detector.threshold
    assert 0.0 <= detector.shrinkage <= 1.0
    assert detector.anomaly_probability(np.array([detector.threshold]))[0] == pytest.approx(0.5)


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


def test_threshold_quantile_out_of_range_is_a_config_error():
    cfg = two_class_config()
    split = build_split(cfg.data)
    with pytest.raises(ConfigError, match="threshold_quantile"):
        run_majority_only(cfg, split, CPU, torch.Generator().manual_seed(0), threshold_quantile=1.0)
