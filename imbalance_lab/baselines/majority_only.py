"""Majority-only baseline for two-class data: learn from the majority class only, as anomaly detection.

The anomaly-detection view of a two-class imbalanced problem: the majority class is "normal", the minority
class "anomalous", and a model is built from the majority alone (in anomaly detection new kinds of anomaly
can appear, so one does not draw a line between known examples of the two classes).

1. Pretext task (Golan & El-Yaniv 2018, "Deep Anomaly Detection Using Geometric Transformations"; Hendrycks
   et al. 2019, "Using Self-Supervised Learning Can Improve Model Robustness and Uncertainty"): a network from
   ``build_model(cfg.model.name, ..., num_classes=4)`` learns, on the majority-class training images only,
   which of the rotations 0/90/180/270° was applied. Each batch of ``trainer.batch_size`` images (crop + flip
   first, when ``data.augment``) is shown in all four rotations, so one step sees 4 x batch_size inputs. The
   BatchNorm statistics used at scoring time are then recomputed on such four-rotation batches (the trainer's
   own recalibration sees unrotated images only, a different input distribution from the one scored).
2. Anomaly score, ``majority_only.score``:

   - ``rotation_nll`` (default; the score of both papers, in Hendrycks et al.'s 4-rotation form):
     s(x) = -sum_{k=0..3} log p(k | rot90(x, k)), the rotation classifier's negative log-likelihood of the
     true rotation summed over the four rotations. A network that has learned what upright majority images
     look like predicts their rotations confidently; on images unlike them it is unsure or wrong.
   - ``feature_mahalanobis``: Mahalanobis distance of ``model.features`` of the unrotated image to a
     Gaussian (mean, Ledoit-Wolf shrunk covariance) fitted to those of the majority fit images (the
     Gaussian-on-features detector of Lee et al. 2018, "A Simple Unified Framework for Detecting
     Out-of-Distribution Samples"; here on features of a rotation network).

   The score is a setting, not chosen by the run: choosing between scores needs anomalies to measure how
   well each separates them, and the run has none it may use (held-out majority images tell how the normal
   class scores, not how well anomalies are told apart). So the default is the papers' score; the run
   records the test AUROC of both as a report, nothing is set from it.
3. Threshold = the q-quantile of the scores of held-out majority training images (q = ``threshold_quantile``,
   default 0.95): with no anomalies to tune on, one fixes the false-alarm rate on the normal class in
   advance, here about 1 - q = 5 % of majority images. Test images scoring above it are predicted as the
   minority class. The held-out part (``calibration_fraction``, default 0.1, a seeded random subset of the
   majority training images) is used neither by the network nor by the Gaussians: scores of the images a
   model was fitted to are optimistic (the in-sample Mahalanobis distance of n points in d dimensions is
   biased low, strongly when d is not small against n, and the network has been trained on them too), so a
   threshold on in-sample scores can flag far more than 1 - q of unseen majority images (synthetic test
   data, 200 images, d = 128: all of them). ``calibration_fraction=0`` gives that in-sample variant (the
   threshold is then the quantile of the fit images' own scores).
4. Reference: a Gaussian (Ledoit-Wolf) on the raw pixels, normalised with the majority fit images' channel
   mean/std and flattened, fitted to the same majority fit images, thresholded the same way (q-quantile of
   the held-out majority images' Mahalanobis distances). Its test AUROC, macro F1 and minority F1 are
   recorded as ``majority_only.pixel_gaussian``: a learned detector is only worth its cost where it beats
   this, and a briefly trained small network need not (the rotation score is only as good as the pretext
   task was learned; ``held_out_rotation_accuracy`` records that). The run's predictions are the detector's.

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
import scipy.linalg
import torch
import torch.nn.functional as F
from sklearn.covariance import LedoitWolf

from imbalance_lab.data.split import ImbalancedSplit, _channel_stats
from imbalance_lab.evaluation import Outcome, score
from imbalance_lab.losses import build_loss
from imbalance_lab.losses.ce import CELossConfig
from imbalance_lab.metrics import compute_metrics, minority_auroc
from imbalance_lab.models import build_model
from imbalance_lab.schema import Config, ConfigError, check
from imbalance_lab.train import Precision, fit
from imbalance_lab.train.trainer import recalibrate_batchnorm

log = logging.getLogger(__name__)

ROTATIONS = 4  # 0, 90, 180, 270 degrees


def mahalanobis_scores(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """sqrt((f - mean)^T precision (f - mean)) for each row f of ``features``."""
    d = np.asarray(features, np.float64) - mean
    # a matrix product, not a 3-operand einsum: that one runs as an unblocked loop, minutes on raw pixels
    return np.sqrt(np.maximum(((d @ precision) * d).sum(1), 0.0))


@dataclass
class Gaussian:
    """Mean and Ledoit-Wolf shrunk precision of normal-class vectors; score = Mahalanobis distance to it."""

    mean: np.ndarray
    precision: np.ndarray
    shrinkage: float

    @classmethod
    def fit(cls, vectors: np.ndarray) -> Gaussian:
        # The precision from a Cholesky factorisation, not sklearn's pinvh (an eigendecomposition): ~7 s
        # instead of ~165 s for a 3072-d pixel Gaussian of 4500 images on 2 busy cores. Shrinkage makes the
        # covariance positive definite unless the data are degenerate (e.g. all vectors equal); pinvh then.
        lw = LedoitWolf(store_precision=False).fit(np.asarray(vectors, np.float64))
        try:
            precision = scipy.linalg.cho_solve(scipy.linalg.cho_factor(lw.covariance_), np.eye(len(lw.covariance_)))
        except np.linalg.LinAlgError:
            precision = scipy.linalg.pinvh(lw.covariance_)
        return cls(lw.location_, precision, float(lw.shrinkage_))

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        return mahalanobis_scores(vectors, self.mean, self.precision)


@dataclass
class Threshold:
    """The ``quantile`` of held-out normal-class scores; above it an image is called anomalous."""

    value: float
    quantile: float
    scale: float  # std of the held-out scores: the width of the pseudo-probability's sigmoid

    @classmethod
    def of(cls, held_out_scores: np.ndarray, quantile: float) -> Threshold:
        return cls(float(np.quantile(held_out_scores, quantile)), quantile,
                   max(float(np.std(held_out_scores)), 1e-12))

    def anomaly_probability(self, scores: np.ndarray) -> np.ndarray:
        """sigmoid((score - threshold) / scale), written with tanh so it never overflows."""
        return 0.5 * (1.0 + np.tanh((scores - self.value) / (2.0 * self.scale)))


def rotate_all(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch (N, C, H, W) in all four rotations, stacked: (4N, C, H, W), and the labels k of rot90 by k."""
    images = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(ROTATIONS)])
    labels = torch.arange(ROTATIONS, device=x.device).repeat_interleave(len(x))
    return images, labels


def train_rotation_model(cfg: Config, x: torch.Tensor, mean, std, generator: torch.Generator):
    """Train a 4-way rotation classifier on the device-resident uint8 images ``x`` with the shared training
    loop (cross-entropy on the rotation labels), then recompute its BatchNorm statistics on four-rotation
    batches of ``x``; (model, history). ``images_per_s`` counts source images."""
    device = x.device
    model = build_model(cfg.model.name, x.shape[1], ROTATIONS, mean, std, cfg.model.embedding_dim,
                        image_size=x.shape[2], pretrained=cfg.model.pretrained, standardize=cfg.data.standardize,
                        bn_momentum=cfg.model.bn_momentum, bn_eps=cfg.model.bn_eps).to(device)
    loss_fn = build_loss(CELossConfig(), [1] * ROTATIONS).to(device)
    unlabelled = torch.zeros(len(x), dtype=torch.long, device=device)  # labels come from rotate_all
    history = fit(model, loss_fn, x, unlabelled, trainer_cfg=cfg.trainer, optim_cfg=cfg.optim,
                  augment=cfg.data.augment, generator=generator, batch_transform=lambda xb, _: rotate_all(xb))
    # 0 batches = keep the running averages, which training accumulated on four-rotation batches already.
    if cfg.trainer.bn_recalibration_batches:
        b = cfg.trainer.batch_size
        order = torch.randperm(len(x), device=device, generator=generator)
        chunks = order[:cfg.trainer.bn_recalibration_batches * b].split(b)
        rotated = torch.cat([rotate_all(x[idx])[0] for idx in chunks])
        batches = list(torch.arange(len(rotated), device=device).split(ROTATIONS * b))
        recalibrate_batchnorm(model, rotated, batches, Precision.of(cfg.trainer, device))
    return model, history


@torch.no_grad()
def rotation_outputs(model, x: torch.Tensor, precision: Precision,
                     batch_size: int = 250) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For uint8 images x (eval mode, no augmentation): ``model.features`` of the unrotated images (N x D),
    the rotation NLL -sum_k log p(k | rot90(x, k)) (N) and the fraction of the 4 rotations predicted right
    (N); float64 numpy."""
    model.eval()
    features, nll, correct = [], [], []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        images, labels = rotate_all(xb)
        with precision.compute():
            f = model.features(precision.inputs(images))
            logits = precision.logits(model.head(f))
        features.append(f[:len(xb)].float())  # rotate_all puts rotation 0 first
        nll.append(F.cross_entropy(logits, labels, reduction="none").view(ROTATIONS, -1).sum(0))
        correct.append((logits.argmax(1) == labels).float().view(ROTATIONS, -1).mean(0))
    return tuple(torch.cat(v).cpu().numpy().astype(np.float64) for v in (features, nll, correct))


def normalised_pixels(x: np.ndarray, mean, std) -> np.ndarray:
    """uint8 images (N, C, H, W) -> (x / 255 - mean_c) / std_c, flattened to (N, C*H*W), float64."""
    m = np.asarray(mean, np.float64)[None, :, None, None]
    s = np.asarray(std, np.float64)[None, :, None, None]
    return ((x / 255.0 - m) / s).reshape(len(x), -1)


def calibration_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, calibration) indices into the n majority images: a seeded random round(fraction * n) held out
    (at least 1 when fraction > 0), the rest for training; both sorted."""
    n_cal = 0 if fraction == 0 else max(min(max(round(fraction * n), 1), n - 2), 0)
    perm = np.random.default_rng([seed, 8]).permutation(n)
    return np.sort(perm[n_cal:]), np.sort(perm[:n_cal])


def pixel_gaussian_reference(split: ImbalancedSplit, fit_x: np.ndarray, cal_x: np.ndarray, mean, std, q: float,
                             majority: int, minority: int) -> dict:
    """The raw-pixel Gaussian of the module docstring (4.): its threshold, test AUROC, macro / minority F1."""
    gaussian = Gaussian.fit(normalised_pixels(fit_x, mean, std))
    cal_scores = gaussian.scores(normalised_pixels(cal_x if len(cal_x) else fit_x, mean, std))
    threshold = Threshold.of(cal_scores, q)
    scores = gaussian.scores(normalised_pixels(split.test_x, mean, std))
    y_pred = np.where(scores > threshold.value, minority, majority)
    metrics = compute_metrics(split.test_y, y_pred, None, split.class_counts["train"], split.class_names)
    return {
        "auroc": minority_auroc(split.test_y == minority, scores),
        "macro_f1": metrics["macro_f1"],
        "minority_f1": metrics["minority_f1"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "threshold": threshold.value,
        "calibration_flag_rate": float(np.mean(cal_scores > threshold.value)),
        "ledoit_wolf_shrinkage": gaussian.shrinkage,
        "dim": int(gaussian.mean.shape[0]),
    }


def run_majority_only(cfg: Config, split: ImbalancedSplit, device: torch.device, generator: torch.Generator,
                      threshold_quantile: float | None = None,
                      calibration_fraction: float | None = None) -> tuple[dict, dict, list[dict]]:
    """Train on the majority class only, score the test set; (predictions, extra metrics, history).

    predictions: ``y_true``, ``y_pred``, ``probs`` (N x 2 pseudo-probability, see the module docstring) as
    :func:`imbalance_lab.train.evaluate` returns them, plus ``scores`` (the test anomaly scores of
    ``cfg.majority_only.score``). ``threshold_quantile`` / ``calibration_fraction`` default to
    ``cfg.majority_only``'s (0.95 / 0.1).
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
    chosen = cfg.majority_only.score
    counts = split.class_counts["train"]
    majority = int(np.argmax(counts))  # the first class on a tie (r = 1)
    minority = 1 - majority
    names = split.class_names
    x_major_np = split.train_x[split.train_y == majority]
    fit_idx, cal_idx = calibration_split(len(x_major_np), cal, cfg.seed)
    log.info("majority-only baseline: rotation pretext task on %d %s training images, threshold on %d "
             "held-out ones, score %s; the %d %s (minority) training images are not used", len(fit_idx),
             names[majority], len(cal_idx), chosen, counts[minority], names[minority])

    precision = Precision.of(cfg.trainer, device)
    fit_x, cal_x = x_major_np[fit_idx], x_major_np[cal_idx]
    x_fit = torch.from_numpy(fit_x).to(device)
    mean, std = _channel_stats(fit_x)  # of the majority images: the minority stays unseen
    model, history = train_rotation_model(cfg, x_fit, mean, std, generator)

    fit_f, fit_nll, _ = rotation_outputs(model, x_fit, precision)
    cal_f, cal_nll, cal_acc = (rotation_outputs(model, torch.from_numpy(cal_x).to(device), precision)
                               if len(cal_idx) else (fit_f, fit_nll, None))
    test_f, test_nll, _ = rotation_outputs(model, torch.from_numpy(split.test_x).to(device), precision)
    features = Gaussian.fit(fit_f)
    # (fit, held-out, test) scores of each score; the held-out ones are the fit ones when nothing is held out
    all_scores = {"rotation_nll": (fit_nll, cal_nll, test_nll),
                  "feature_mahalanobis": tuple(features.scores(f) for f in (fit_f, cal_f, test_f))}
    fit_scores, cal_scores, scores = all_scores[chosen]
    threshold = Threshold.of(cal_scores, q)
    y_pred = np.where(scores > threshold.value, minority, majority).astype(np.int64)
    probs = np.empty((len(scores), 2), np.float32)
    probs[:, minority] = threshold.anomaly_probability(scores)
    probs[:, majority] = 1.0 - probs[:, minority]

    is_minority = split.test_y == minority
    auroc_by_score = {name: minority_auroc(is_minority, s[2]) for name, s in all_scores.items()}
    pixels = pixel_gaussian_reference(split, fit_x, cal_x, mean, std, q, majority, minority)
    extra = {"majority_only": {
        "score": chosen,
        "auroc": auroc_by_score[chosen],
        # every score's test AUROC, for the record: the score is a setting, never picked from these
        "auroc_by_score": auroc_by_score,
        "pixel_gaussian": pixels,
        "threshold": threshold.value,
        "threshold_quantile": q,
        "calibration_fraction": cal,
        # fractions of majority training images above the threshold: ~1 - q on the held-out ones by
        # construction; on the fit images (in-sample) biased, which is why the threshold is not set there
        "calibration_flag_rate": float(np.mean(cal_scores > threshold.value)),
        "fit_flag_rate": float(np.mean(fit_scores > threshold.value)),
        # did the pretext task generalise? (0.25 = chance); null without held-out images
        "held_out_rotation_accuracy": None if cal_acc is None else float(cal_acc.mean()),
        "majority_class": names[majority],
        "minority_class": names[minority],
        "train_images_used": len(x_major_np),
        "fit_images": len(fit_idx),
        "calibration_images": len(cal_idx),
        "minority_train_images_unused": int(counts[minority]),
        "feature_ledoit_wolf_shrinkage": features.shrinkage,
        "feature_dim": int(features.mean.shape[0]),
        "probs": "pseudo-probability sigmoid((score - threshold) / std of held-out scores), not calibrated",
    }}
    info = extra["majority_only"]
    log.info("majority-only: %s threshold %.3f (q=%.2f) flags %.1f%% of the held-out and %.1f%% of the fit "
             "majority training images; test AUROC %s (%s), raw-pixel Gaussian %s", chosen, threshold.value, q,
             100 * info["calibration_flag_rate"], 100 * info["fit_flag_rate"], _fmt(info["auroc"]),
             ", ".join(f"{k} {_fmt(v)}" for k, v in auroc_by_score.items()), _fmt(pixels["auroc"]))
    pred = {"y_true": split.test_y.copy(), "y_pred": y_pred, "probs": probs, "scores": scores}
    return pred, extra, history


def _fmt(auroc: float | None) -> str:
    return "n/a" if auroc is None else f"{auroc:.4f}"


def majority_only_outcome(cfg: Config, split: ImbalancedSplit, device: torch.device,
                          generator: torch.Generator) -> Outcome:
    """``method=majority_only`` as a run: the test predictions scored like any other method's."""
    pred, extra, history = run_majority_only(cfg, split, device, generator)
    return Outcome(history=history, test=(pred, score(pred, split)), extra=extra)
