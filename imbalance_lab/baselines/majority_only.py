"""Majority-only baseline for two-class data: learn from the majority class only, as anomaly detection.

The anomaly-detection view of a two-class imbalanced problem: the majority class is "normal", the minority
class "anomalous", and a model is built from the majority alone (in anomaly detection new kinds of anomaly
can appear, so one does not draw a line between known examples of the two classes).

1. Pretext task (Golan & El-Yaniv 2018; Hendrycks et al. 2019): a network from ``build_model(cfg.model.name,
   ..., num_classes=4)`` learns, on the majority-class training images only, which of the rotations
   0/90/180/270° was applied. Each batch of ``trainer.batch_size`` images (crop + flip first, when
   ``data.augment``) is shown in all four rotations, so one step sees 4 x batch_size inputs.
2. Density: a Gaussian (mean, Ledoit-Wolf shrunk covariance) fitted to ``model.features`` of the unrotated,
   unaugmented majority training images. Anomaly score = Mahalanobis distance to it.
3. Threshold = the q-quantile of the scores of held-out majority training images (q = ``threshold_quantile``,
   default 0.95): with no anomalies to tune on, one fixes the false-alarm rate on the normal class in
   advance, here about 1 - q = 5 % of majority images. Test images scoring above it are predicted as the
   minority class. The held-out part (``calibration_fraction``, default 0.1, a seeded random subset of the
   majority training images) is used neither by the network nor by the Gaussian: scores of the images a
   model was fitted to are optimistic (the in-sample Mahalanobis distance of n points in d dimensions is
   biased low, strongly when d is not small against n, and the network has been trained on them too), so a
   threshold on in-sample scores can flag far more than 1 - q of unseen majority images (synthetic test
   data, 200 images, d = 128: all of them). ``calibration_fraction=0`` gives that in-sample variant (the
   threshold is then the quantile of the fit images' own scores).

Nothing is set from test labels or minority training images: the minority training images are not used
at all, not even for the input normalisation (mean/std are the majority images'). The threshold-free
AUROC of the score on the test set is reported as well.

``probs`` (used by the metrics only for ECE) is a pseudo-probability, not a calibrated one:
p(minority) = sigmoid((score - threshold) / s), s = standard deviation of the held-out majority scores, so
p = 0.5 exactly at the threshold and argmax(probs) agrees with the thresholded prediction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from imbalance_lab.data.split import ImbalancedSplit, _channel_stats
from imbalance_lab.evaluation import Outcome, score
from imbalance_lab.losses import build_loss
from imbalance_lab.losses.ce import CELossConfig
from imbalance_lab.models import build_model
from imbalance_lab.schema import Config, ConfigError, check
from imbalance_lab.train import Precision, fit

log = logging.getLogger(__name__)

ROTATIONS = 4  # 0, 90, 180, 270 degrees


def mahalanobis_scores(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """sqrt((f - mean)^T precision (f - mean)) for each row f of ``features``."""
    d = np.asarray(features, np.float64) - mean
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, precision, d), 0.0))


@dataclass
class MahalanobisDetector:
    """A Gaussian fitted to normal-class features and a threshold on the Mahalanobis distance to it."""

    mean: np.ndarray
    precision: np.ndarray
    threshold: float
    quantile: float
    scale: float  # std of the held-out scores: the width of the pseudo-probability's sigmoid
    shrinkage: float

    @classmethod
    def fit(cls, features: np.ndarray, quantile: float,
            calibration_features: np.ndarray | None = None) -> MahalanobisDetector:
        """Gaussian from ``features``; threshold = ``quantile`` of the scores of ``calibration_features``
        (held-out normal images), or of ``features`` themselves when None."""
        lw = LedoitWolf().fit(np.asarray(features, np.float64))
        held_out = features if calibration_features is None else calibration_features
        scores = mahalanobis_scores(held_out, lw.location_, lw.precision_)
        return cls(lw.location_, lw.precision_, float(np.quantile(scores, quantile)), quantile,
                   max(float(scores.std()), 1e-12), float(lw.shrinkage_))

    def scores(self, features: np.ndarray) -> np.ndarray:
        return mahalanobis_scores(features, self.mean, self.precision)

    def anomaly_probability(self, scores: np.ndarray) -> np.ndarray:
        """sigmoid((score - threshold) / scale), written with tanh so it never overflows."""
        return 0.5 * (1.0 + np.tanh((scores - self.threshold) / (2.0 * self.scale)))


def rotate_all(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch (N, C, H, W) in all four rotations, stacked: (4N, C, H, W), and the labels k of rot90 by k."""
    images = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(ROTATIONS)])
    labels = torch.arange(ROTATIONS, device=x.device).repeat_interleave(len(x))
    return images, labels


def train_rotation_model(cfg: Config, x: torch.Tensor, mean, std, generator: torch.Generator):
    """Train a 4-way rotation classifier on the device-resident uint8 images ``x`` with the shared training
    loop (cross-entropy on the rotation labels); (model, history). ``images_per_s`` counts source images."""
    device = x.device
    model = build_model(cfg.model.name, x.shape[1], ROTATIONS, mean, std, cfg.model.embedding_dim).to(device)
    model = Precision.of(cfg.trainer, device).prepare(model)
    loss_fn = build_loss(CELossConfig(), [1] * ROTATIONS).to(device)
    unlabelled = torch.zeros(len(x), dtype=torch.long, device=device)  # labels come from rotate_all
    history = fit(model, loss_fn, x, unlabelled, trainer_cfg=cfg.trainer, optim_cfg=cfg.optim,
                  augment=cfg.data.augment, generator=generator, batch_transform=lambda xb, _: rotate_all(xb))
    return model, history


@torch.no_grad()
def extract_features(model, x: torch.Tensor, precision: Precision, batch_size: int = 1000) -> np.ndarray:
    """``model.features`` (eval mode, no augmentation, no rotation) of uint8 images, float64 numpy."""
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        with precision.autocast():
            out.append(model.features(precision.inputs(x[i:i + batch_size])).float())
    return torch.cat(out).cpu().numpy().astype(np.float64)


def calibration_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, calibration) indices into the n majority images: a seeded random round(fraction * n) held out
    (at least 1 when fraction > 0), the rest for training; both sorted."""
    n_cal = 0 if fraction == 0 else max(min(max(round(fraction * n), 1), n - 2), 0)
    perm = np.random.default_rng([seed, 8]).permutation(n)
    return np.sort(perm[n_cal:]), np.sort(perm[:n_cal])


def run_majority_only(cfg: Config, split: ImbalancedSplit, device: torch.device, generator: torch.Generator,
                      threshold_quantile: float | None = None,
                      calibration_fraction: float | None = None) -> tuple[dict, dict, list[dict]]:
    """Train on the majority class only, score the test set; (predictions, extra metrics, history).

    predictions: ``y_true``, ``y_pred``, ``probs`` (N x 2 pseudo-probability, see the module docstring) as
    :func:`imbalance_lab.train.evaluate` returns them, plus ``scores`` (the test anomaly scores).
    ``threshold_quantile`` / ``calibration_fraction`` default to ``cfg.majority_only``'s (0.95 / 0.1).
    """
    if split.num_classes != 2:
        raise ConfigError("method", "majority_only",
                          f"two-class data (e.g. data=cifar2); this split has {split.num_classes} classes")
    # Explicit arguments (tests, notebooks) bypass the config's own range checks, so check them here too.
    q = cfg.majority_only.threshold_quantile if threshold_quantile is None else threshold_quantile
    check(0 < q < 1, "majority_only.threshold_quantile", q, "a number in (0, 1)")
    cal = cfg.majority_only.calibration_fraction if calibration_fraction is None else calibration_fraction
    check(0 <= cal < 1, "majority_only.calibration_fraction", cal, "a number in [0, 1)")
    check(split.train_x.shape[2] == split.train_x.shape[3], "method", "majority_only",
          f"square images for the rotation pretext task (got {split.train_x.shape[2:]})")
    counts = split.class_counts["train"]
    majority = int(np.argmax(counts))  # the first class on a tie (r = 1)
    minority = 1 - majority
    names = split.class_names
    x_major_np = split.train_x[split.train_y == majority]
    fit_idx, cal_idx = calibration_split(len(x_major_np), cal, cfg.seed)
    log.info("majority-only baseline: rotation pretext task + Gaussian on %d %s training images, threshold "
             "on %d held-out ones; the %d %s (minority) training images are not used", len(fit_idx),
             names[majority], len(cal_idx), counts[minority], names[minority])

    precision = Precision.of(cfg.trainer, device)
    x_fit = torch.from_numpy(x_major_np[fit_idx]).to(device)
    mean, std = _channel_stats(x_major_np[fit_idx])  # of the majority images: the minority stays unseen
    model, history = train_rotation_model(cfg, x_fit, mean, std, generator)

    fit_features = extract_features(model, x_fit, precision)
    cal_features = (extract_features(model, torch.from_numpy(x_major_np[cal_idx]).to(device), precision)
                    if len(cal_idx) else None)
    detector = MahalanobisDetector.fit(fit_features, q, cal_features)
    fit_scores = detector.scores(fit_features)
    cal_scores = fit_scores if cal_features is None else detector.scores(cal_features)
    test_x = torch.from_numpy(split.test_x).to(device)
    scores = detector.scores(extract_features(model, test_x, precision))
    y_pred = np.where(scores > detector.threshold, minority, majority).astype(np.int64)
    probs = np.empty((len(scores), 2), np.float32)
    probs[:, minority] = detector.anomaly_probability(scores)
    probs[:, majority] = 1.0 - probs[:, minority]

    is_minority = split.test_y == minority
    auroc = float(roc_auc_score(is_minority, scores)) if 0 < is_minority.sum() < len(is_minority) else None
    extra = {"majority_only": {
        "auroc": auroc,
        "threshold": detector.threshold,
        "threshold_quantile": q,
        "calibration_fraction": cal,
        # fractions of majority training images above the threshold: ~1 - q on the held-out ones by
        # construction; on the fit images (in-sample) lower, which is why the threshold is not set there
        "calibration_flag_rate": float(np.mean(cal_scores > detector.threshold)),
        "fit_flag_rate": float(np.mean(fit_scores > detector.threshold)),
        "majority_class": names[majority],
        "minority_class": names[minority],
        "train_images_used": len(x_major_np),
        "fit_images": len(fit_idx),
        "calibration_images": len(cal_idx),
        "minority_train_images_unused": int(counts[minority]),
        "score": "Mahalanobis distance of model.features to a Gaussian (Ledoit-Wolf) of the majority "
                 "training images; the model learned 4-way rotation prediction on those images only",
        "ledoit_wolf_shrinkage": detector.shrinkage,
        "feature_dim": int(detector.mean.shape[0]),
        "probs": "pseudo-probability sigmoid((score - threshold) / std of held-out scores), not calibrated",
    }}
    info = extra["majority_only"]
    log.info("majority-only: threshold %.3f (q=%.2f) flags %.1f%% of the held-out and %.1f%% of the fit majority "
             "training images; test AUROC %s", detector.threshold, q, 100 * info["calibration_flag_rate"],
             100 * info["fit_flag_rate"], "n/a" if auroc is None else f"{auroc:.4f}")
    pred = {"y_true": split.test_y.copy(), "y_pred": y_pred, "probs": probs, "scores": scores}
    return pred, extra, history


def majority_only_outcome(cfg: Config, split: ImbalancedSplit, device: torch.device,
                          generator: torch.Generator) -> Outcome:
    """``method=majority_only`` as a run: the test predictions scored like any other method's."""
    pred, extra, history = run_majority_only(cfg, split, device, generator)
    return Outcome(history=history, test=(pred, score(pred, split)), extra=extra)
