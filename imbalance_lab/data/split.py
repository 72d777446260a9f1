"""The train/val/test arrays of one experiment, built from a :class:`DataConfig`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np

from imbalance_lab.data.profiles import exp_counts, held_out_count, reduce_counts, step_counts
from imbalance_lab.data.sources import load_data, pixels_sha256
from imbalance_lab.schema import DataConfig, check

SPLITS = ("train", "val", "test")
_TRAIN_STREAM, _TEST_STREAM = 0, 1  # separate permutations for the source's train and test sets


@dataclass
class ImbalancedSplit:
    """Images uint8 N×C×H×W, labels int64 in 0..K-1 (the order of ``class_names``)."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: list[str]
    class_counts: dict[str, list[int]]  # split -> images per class
    indices: dict[str, np.ndarray]  # split -> source indices kept (train/val: source train set; test: source test)
    mean: list[float]  # per channel, of train_x / 255
    std: list[float]
    fingerprint: str  # identifies the kept images: same fingerprint, same data
    pixels_sha256: str = ""  # of the arrays themselves (images and labels of every split), as trained on
    note: str = ""
    description: str = ""
    name: str = ""
    source: str = ""
    details: dict = dataclasses.field(default_factory=dict)  # the source's own facts (an image folder's)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_x.shape[2]

    def summary(self) -> dict:
        """JSON-ready description for the run folder."""
        return {
            "name": self.name,
            "source": self.source,
            "description": self.description,
            "note": self.note,
            "class_names": list(self.class_names),
            "class_counts": {k: list(v) for k, v in self.class_counts.items()},
            "image_shape": list(self.train_x.shape[1:]),
            "mean": list(self.mean),
            "std": list(self.std),
            "fingerprint": self.fingerprint,
            "pixels_sha256": self.pixels_sha256,
            **({"details": self.details} if self.details else {}),
        }


def build_split(cfg: DataConfig) -> ImbalancedSplit:
    """Load the source, keep ``cfg.classes``, cut each class to its profile count, hold out validation (or take
    the source's own validation part: an image folder's val/)."""
    raw = load_data(cfg)
    n_source = len(raw.class_names)
    kept = list(range(n_source)) if cfg.classes is None else list(cfg.classes)
    for key, labels in (("data.classes", kept), ("data.reduced_classes", cfg.reduced_classes)):
        check(all(0 <= c < n_source for c in labels), key, labels, f"labels in 0..{n_source - 1} ({cfg.source})")
    check(cfg.subset_seed >= 0, "data.subset_seed", cfg.subset_seed, "an integer >= 0")
    names = [raw.class_names[c] for c in kept]
    train_available = _class_sizes(raw.train_labels, kept)
    test_available = _class_sizes(raw.test_labels, kept)
    empty = [c for c, n in zip(kept, train_available) if n == 0]
    check(not empty, "data.classes", kept, f"classes with training images (none for {empty} in {raw.description})")

    train_n = _targets(cfg, train_available, cfg.n_max, kept, names, "training")
    # Test policy reduced applies the training profile's shape with test_n_max as reference
    # (mnist_even / cifar10_even: floor(test_n_max / r) for the reduced classes); balanced keeps it all.
    test_n = test_available if cfg.test_policy == "balanced" else _targets(
        cfg, test_available, cfg.test_n_max, kept, names, "test")

    chosen = [_first(raw.train_labels, c, n, [cfg.subset_seed, _TRAIN_STREAM, c], cfg.subset_order)
              for c, n in zip(kept, train_n)]
    # Validation takes the tail of each class's chosen prefix, so the training part stays a prefix of
    # the class permutation and remains nested across r.
    own_val = raw.val_labels is not None
    n_val = [0 if own_val else held_out_count(cfg.val_fraction, len(idx)) for idx in chosen]
    parts = {
        "train": [idx[: len(idx) - v] for idx, v in zip(chosen, n_val)],
        "val": ([np.flatnonzero(raw.val_labels == c) for c in kept] if own_val else
                [idx[len(idx) - v:] for idx, v in zip(chosen, n_val)]),
        "test": [_first(raw.test_labels, c, n, [cfg.subset_seed, _TEST_STREAM, c], cfg.subset_order)
                 for c, n in zip(kept, test_n)],
    }
    relabel = np.full(n_source, -1, np.int64)
    relabel[kept] = np.arange(len(kept))
    arrays, indices = {}, {}
    for split, (images, labels) in {"train": (raw.train_images, raw.train_labels),
                                    "val": (raw.val_images, raw.val_labels) if own_val else
                                           (raw.train_images, raw.train_labels),
                                    "test": (raw.test_images, raw.test_labels)}.items():
        # Source order (sorted indices), not class blocks: the arrays look like the source, only thinner.
        idx = np.sort(np.concatenate(parts[split])).astype(np.int64)
        indices[split] = idx
        arrays[split] = (np.ascontiguousarray(images[idx].transpose(0, 3, 1, 2)), relabel[labels[idx]])

    mean, std = _channel_stats(arrays["train"][0])
    return ImbalancedSplit(
        *arrays["train"], *arrays["val"], *arrays["test"],
        class_names=names,
        class_counts={s: np.bincount(arrays[s][1], minlength=len(kept)).tolist() for s in SPLITS},
        indices=indices, mean=mean, std=std,
        fingerprint=_fingerprint(cfg, kept, indices, raw.identity),
        pixels_sha256=pixels_sha256(*[a for s in SPLITS for a in arrays[s]]),
        note=raw.note, description=raw.description, name=cfg.name, source=cfg.source, details=raw.details,
    )


def _class_sizes(labels: np.ndarray, kept: list[int]) -> list[int]:
    sizes = np.bincount(labels, minlength=max(kept) + 1)
    return [int(sizes[c]) for c in kept]


def _targets(cfg: DataConfig, available: list[int], n_max: int | None, kept: list[int], names: list[str],
             split: str) -> list[int]:
    """Images per kept class under ``cfg.profile``; n_max None = the largest class available."""
    n_max = n_max or max(available)
    r = cfg.imbalance
    if cfg.profile == "exp":
        counts = exp_counts(n_max, len(kept), r, names, split)
    elif cfg.profile == "step":
        counts = step_counts(n_max, len(kept), r, names, split)
    elif cfg.profile == "reduce":
        return reduce_counts(available, [c in cfg.reduced_classes for c in kept], n_max, r, names, split)
    else:
        return list(available)
    # Where classes differ in size (MNIST: 5421..6742) n_max is the largest, and smaller classes give
    # all they have rather than fail.
    return [min(n, a) for n, a in zip(counts, available)]


def class_order(labels: np.ndarray, label: int, seed: list[int], order: str = "seeded") -> np.ndarray:
    """The class's source indices in a seeded order (``data.subset_order=first``: in the source's order): a split
    takes a prefix of it (independent of its length, hence nested across r); the unlabelled split of
    semi-supervised runs takes what follows the labelled part."""
    members = np.flatnonzero(labels == label)
    return members if order == "first" else members[np.random.default_rng(seed).permutation(len(members))]


def _first(labels: np.ndarray, label: int, n: int, seed: list[int], order: str = "seeded") -> np.ndarray:
    """The first ``n`` of the class's order."""
    return class_order(labels, label, seed, order)[:n]


def _channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of x / 255, exact, from 256-bin histograms (no float copy of the images)."""
    levels = np.arange(256) / 255.0
    mean, std = [], []
    for c in range(x.shape[1]):
        hist = np.bincount(x[:, c].ravel(), minlength=256)
        m = float(hist @ levels / hist.sum())
        mean.append(m)
        # A constant channel would make the input normalisation divide by zero.
        std.append(max(float(np.sqrt(hist @ (levels - m) ** 2 / hist.sum())), 1e-3))
    return mean, std


def _fingerprint(cfg: DataConfig, kept: list[int], indices: dict[str, np.ndarray], content: str = "") -> str:
    identity = {"name": cfg.name, "source": cfg.source, "classes": kept}
    if cfg.source == "synthetic":  # the generator's settings decide the pixels behind the indices
        identity["synthetic"] = dataclasses.asdict(cfg.synthetic)
    if content:  # what else decides them (an image folder: its files, image size and test split)
        identity["content"] = content
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for split in SPLITS:
        digest.update(split.encode())
        digest.update(indices[split].astype("<i8").tobytes())
    return digest.hexdigest()[:16]
