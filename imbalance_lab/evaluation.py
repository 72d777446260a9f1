"""One run's evaluation: predictions on the test (and validation) split, their metrics, and the test
headline at the epoch of the best validation macro F1 — never an epoch chosen on the test set."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .data import ImbalancedSplit
from .metrics import compute_metrics, headline
from .train import Precision, evaluate


def score(pred: dict, split: ImbalancedSplit) -> dict:
    """The metrics of one split's predictions (``y_true``, ``y_pred``, ``probs``)."""
    return compute_metrics(pred["y_true"], pred["y_pred"], pred["probs"], split.class_counts["train"],
                           split.class_names)


@dataclass
class Outcome:
    """What a method leaves for its run folder."""

    history: list = field(default_factory=list)
    test: tuple[dict, dict] | None = None  # (predictions, metrics) of the last evaluation
    val: tuple[dict, dict] | None = None
    best_on_validation: dict | None = None  # the test headline at the best validation macro F1
    extra: dict = field(default_factory=dict)  # method state for metrics.json (e.g. the debiased loss's q̂)
    centres: np.ndarray | None = None  # affinity centres, for the embedding plot
    centres_per_class: int = 1


EVAL_BATCH = 1000  # images per evaluation forward pass


def eval_sets(split: ImbalancedSplit, device: torch.device, one_batch: bool = False
              ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The test (and validation) images and labels on the device, once per split: the runs of a stack share
    them. ``one_batch`` (``trainer.fast_dev_run``): only each split's first evaluation batch (the splits keep
    the source's order, so it mixes the classes)."""
    arrays = {"test": (split.test_x, split.test_y)}
    if len(split.val_y):
        arrays["val"] = (split.val_x, split.val_y)
    keep = slice(0, EVAL_BATCH if one_batch else None)
    return {k: (torch.from_numpy(x[keep]).to(device), torch.from_numpy(y[keep]).to(device))
            for k, (x, y) in arrays.items()}


class Evaluator:
    """Called by the training loop after an evaluation epoch: evaluates ``model`` on the device-resident test
    (and validation) split (``eval_sets``), keeps the latest predictions and metrics, and returns the epoch's
    record."""

    def __init__(self, split: ImbalancedSplit, sets: dict, model, loss_fn, precision: Precision,
                 with_features: bool = False):
        self.split, self.sets, self.model, self.loss_fn, self.precision = split, sets, model, loss_fn, precision
        self.with_features = with_features
        self.last: dict[str, tuple[dict, dict]] = {}
        self.best_val: dict = {}

    def __call__(self, epoch: int) -> dict:
        record = {}
        for name, (x, y) in self.sets.items():
            pred = evaluate(self.model, self.loss_fn, x, y, self.precision,
                            with_features=self.with_features and name == "test")
            self.last[name] = (pred, score(pred, self.split))
            record.update({f"{name}_{k}": v for k, v in headline(self.last[name][1]).items()})
        if "val" in self.last and self.last["val"][1]["macro_f1"] > self.best_val.get("val_macro_f1", -1.0):
            self.best_val = {"epoch": epoch + 1, "val_macro_f1": self.last["val"][1]["macro_f1"],
                             "test": headline(self.last["test"][1])}
        return record

    def outcome(self, history: list, extra: dict) -> Outcome:
        head = getattr(self.model, "head", None)
        centres = getattr(head, "centres", None)
        return Outcome(history=history, test=self.last.get("test"), val=self.last.get("val"),
                       best_on_validation=self.best_val or None, extra=extra,
                       centres=None if centres is None else centres.detach().float().cpu().numpy(),
                       centres_per_class=getattr(head, "m", 1))
