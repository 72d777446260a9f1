"""The unlabelled split of class-imbalanced semi-supervised learning, drawn from the same training set as the
labelled one (the protocol of DARP, Kim et al. NeurIPS 2020, used by CReST, ABC and DebiasPL on CIFAR-10-LT):
labelled N_i = floor(N1 · γ^(−i/(C−1))) (``data``), unlabelled M_i = floor(M1 · γ_u^(−i/(C−1))) (``ssl``),
disjoint; ``ssl.unlabelled_profile=exp_reversed`` gives the largest unlabelled class to the smallest labelled one
(M_i = floor(M1 · γ_u^(−(C−1−i)/(C−1))), USB's γ_u = −100 case). Class c's unlabelled images are the M_c that
follow its labelled ones in the same seeded class order (``split.class_order``), so both splits are fixed by
``data.subset_seed`` and nested across ratios.

The unlabelled labels are kept only to score the pseudo-labels (diagnostics); the trainer never gives them to
a loss."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from imbalance_lab.data.profiles import exp_counts, step_counts
from imbalance_lab.data.sources import load_data
from imbalance_lab.data.split import _TRAIN_STREAM, ImbalancedSplit, class_order
from imbalance_lab.schema import DataConfig, SSLConfig, check


@dataclass
class UnlabelledSplit:
    """Images uint8 N×C×H×W and their hidden labels (diagnostics only), source train-set indices."""

    x: np.ndarray
    hidden_y: np.ndarray
    indices: np.ndarray
    class_counts: list[int]
    fingerprint: str

    def summary(self) -> dict:
        return {"class_counts": list(self.class_counts), "size": len(self.indices),
                "fingerprint": self.fingerprint}


def unlabelled_counts(ssl_cfg: SSLConfig, num_classes: int, class_names) -> list[int]:
    """M_c per class of ``ssl.unlabelled_profile``; ``exp_reversed`` is ``exp`` read from the last class."""
    profile, n_max, ratio = ssl_cfg.unlabelled_profile, ssl_cfg.unlabelled_n_max, ssl_cfg.unlabelled_imbalance
    if profile == "step":
        return step_counts(n_max, num_classes, ratio, class_names, "unlabelled")
    if profile == "exp_reversed":
        return exp_counts(n_max, num_classes, ratio, class_names[::-1], "unlabelled")[::-1]
    return exp_counts(n_max, num_classes, ratio, class_names, "unlabelled")


def build_unlabelled(data_cfg: DataConfig, ssl_cfg: SSLConfig, labelled: ImbalancedSplit) -> UnlabelledSplit:
    """The unlabelled split beside ``labelled`` (built from ``data_cfg`` by ``build_split``)."""
    raw = load_data(data_cfg)
    kept = list(range(len(raw.class_names))) if data_cfg.classes is None else list(data_cfg.classes)
    c = len(kept)
    wanted = unlabelled_counts(ssl_cfg, c, labelled.class_names)
    taken = [t + v for t, v in zip(labelled.class_counts["train"], labelled.class_counts["val"])]
    parts = []
    for k, (label, n, m) in enumerate(zip(kept, taken, wanted)):
        order = class_order(raw.train_labels, label, [data_cfg.subset_seed, _TRAIN_STREAM, label],
                            data_cfg.subset_order)
        check(n + m <= len(order), "ssl.unlabelled_n_max", ssl_cfg.unlabelled_n_max,
              f"at most {len(order) - n} unlabelled images for class {k} '{labelled.class_names[k]}' "
              f"({len(order)} in the source, {n} labelled)")
        parts.append(order[n:n + m])
    idx = np.sort(np.concatenate(parts)).astype(np.int64)
    relabel = np.full(len(raw.class_names), -1, np.int64)
    relabel[kept] = np.arange(c)
    hidden = relabel[raw.train_labels[idx]]
    digest = hashlib.sha256(labelled.fingerprint.encode())
    digest.update(idx.astype("<i8").tobytes())
    return UnlabelledSplit(x=np.ascontiguousarray(raw.train_images[idx].transpose(0, 3, 1, 2)), hidden_y=hidden,
                           indices=idx, class_counts=np.bincount(hidden, minlength=c).tolist(),
                           fingerprint=digest.hexdigest()[:16])
