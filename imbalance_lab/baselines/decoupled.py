"""Decoupled classifier learning, stage 2 (``method=decoupled``): Kang et al., "Decoupling Representation and
Classifier for Long-Tailed Recognition", ICLR 2020 (arXiv 1910.09217), as the authors' code does it
(github.com/facebookresearch/classifier-balancing at f162ade; file names below are theirs).

Stage 1 is any finished supervised (or FixMatch) run, ``decoupled.stage1``: its folder, or a sweep folder holding
the one run of this run's data split and seed. Its ``model.pt`` gives the features f(x) (the network up to the
head) and its linear classifier z_c = w_c · f + b_c. Stage 2 keeps f fixed and changes only the classifier
(``decoupled.mode``, the registry ``MODES``):

- ``crt``, classifier re-training: a new head, the stage-2 loss's (``loss=ce``: a linear layer with PyTorch's
  default initialisation; ``DotProductClassifier.py``, which ``run_networks.py load_model`` leaves re-initialised),
  trained on the frozen features with this run's sampler, loss, optimiser and epochs — the paper's class-balanced
  sampling is ``sampler=oversample`` (``config/ImageNet_LT/cls_crt.yaml``: ClassAwareSampler, 10 epochs).
- ``tau_norm``, τ-normalised classifier, no training:

      z_c = (w_c / ||w_c||^τ) · f + b_c

  τ = ``decoupled.tau``; null: the τ of ``decoupled.tau_grid`` (0, 0.1, ..., 2 as ``tau_norm.py``'s
  ``np.linspace(0, 2, 21)``) with the best balanced accuracy on the validation split (``data.val_fraction`` > 0;
  ties: the first in the grid) — never on test. τ = 0 is stage 1's classifier exactly.
- ``lws``, learnable weight scaling: z_c = s_c · (w_c · f + b_c), w and b stage 1's and frozen, s_c learned from 1
  (``TauNormClassifier.py``, ``config/ImageNet_LT/cls_lws.yaml``), trained as ``crt``.

Deliberate differences from the authors' code, each switchable:

- The feature layers stay in eval mode (``decoupled.backbone_bn=frozen``): BatchNorm normalises with stage 1's
  statistics, so the classifier trains and is evaluated on exactly stage 1's features. The authors' code puts every
  network in train mode in stage 2 (``run_networks.py`` ``train``; so does BagofTricks-LT's ``train_model``): the
  frozen backbone's BatchNorm then normalises each class-balanced batch with its own statistics and its running
  averages follow them, which evaluation uses — ``decoupled.backbone_bn=batch_stats`` with
  ``trainer.bn_recalibration_batches=0`` (with recalibration on, evaluation uses statistics recomputed from uniform
  training batches instead, this project's precise BN).
- τ-normalisation keeps stage 1's bias (``decoupled.tau_norm_bias=true``), as BagofTricks-LT does
  (``lib/net/network.py`` ``load_model`` divides the weight only); ``tau_norm.py`` scores with the weights alone
  (``dotproduct_similarity``): ``decoupled.tau_norm_bias=false``.
- τ is chosen by balanced accuracy on our validation split, a stratified part of the long-tailed training split
  (held out in stage 1 too); the paper chooses on ImageNet-LT's balanced validation set, where balanced accuracy is
  accuracy, the number ``tau_norm.py`` prints per τ.
- Class-balanced sampling (``sampler=oversample``) draws each image with probability ∝ 1/n_c, with replacement,
  an epoch as many images as the split; the authors' ``ClassAwareSampler`` cycles through the classes in shuffled
  order, four images of a class at a time, so every batch is balanced exactly. Their epoch has as many steps too
  (``epoch_steps`` = training images / batch size).

The run records its stage 1 in ``metrics.json`` (``decoupled.stage1``: folder, the hash of its resolved config as
``checkpoint.config_hash`` computes it, its data fingerprint, seed, method and the SHA-256 of its ``model.pt``) and
refuses, in one line and before training, a stage-1 run of another data split (fingerprint) or model. A decoupled
run writes no ``model.pt`` and no checkpoints (it is short), like ``method=majority_only``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from imbalance_lab.checkpoint import FINAL_WEIGHTS, config_hash
from imbalance_lab.data.split import ImbalancedSplit
from imbalance_lab.evaluation import Evaluator, Outcome, eval_sets
from imbalance_lab.losses import LOSSES, ImbalanceLoss, build_loss
from imbalance_lab.models import Classifier, build_model
from imbalance_lab.runfolder import METRICS_FILE
from imbalance_lab.schema import Config, ConfigError, check, one_of
from imbalance_lab.train import Precision, evaluate, fit

log = logging.getLogger(__name__)

STAGE1_METHODS = ("supervised", "fixmatch")  # runs whose model.pt is a classifier on features


# ----------------------------------------------------------------------------- the heads
def tau_normalised(head: nn.Linear, tau: float, keep_bias: bool = True) -> nn.Linear:
    """A copy of ``head`` with class vectors w_c / ||w_c||^τ (τ = 0: w_c exactly), its bias kept or dropped."""
    out = copy.deepcopy(head)
    with torch.no_grad():
        norms = head.weight.detach().norm(dim=1, keepdim=True).clamp_min(torch.finfo(head.weight.dtype).tiny)
        out.weight.copy_(head.weight / norms.pow(tau))
    if not keep_bias:
        out.bias = None
    return out.requires_grad_(False)


class LearnedScales(nn.Module):
    """LWS: s_c · (w_c · f + b_c), stage 1's linear classifier frozen, the scales s_c learned (from 1)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear.requires_grad_(False)
        self.scales = nn.Parameter(torch.ones(linear.out_features))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.linear(f) * self.scales


class FrozenFeatures(Classifier):
    """Stage 1's network with a new head: its feature layers (backbone and embedding) do not learn and, with
    ``frozen_statistics``, stay in eval mode whatever ``train()`` asks (BatchNorm keeps stage 1's statistics)."""

    def __init__(self, net: Classifier, head: nn.Module, frozen_statistics: bool):
        super().__init__(net.backbone, 0, net.mean.flatten().tolist(), net.std.flatten().tolist(), head=head)
        self.embed, self.embedding_dim = net.embed, net.embedding_dim
        self.frozen_statistics = frozen_statistics
        self.backbone.requires_grad_(False)
        self.embed.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_statistics:
            self.backbone.eval()
            self.embed.eval()
        return self


# ----------------------------------------------------------------------------- stage 1
@dataclass
class Stage1:
    """A finished run used as stage 1: its folder, its metrics.json and its loaded weights."""

    folder: Path
    metrics: dict
    weights: dict[str, torch.Tensor]

    @property
    def config(self) -> dict:
        return self.metrics.get("config") or {}

    def record(self) -> dict:
        """What metrics.json keeps of it."""
        return {"folder": str(self.folder), "config_hash": config_hash(self.config),
                "fingerprint": (self.metrics.get("data") or {}).get("fingerprint"), "seed": self.metrics.get("seed"),
                "method": self.metrics.get("method"),
                "model_sha256": hashlib.sha256((self.folder / FINAL_WEIGHTS).read_bytes()).hexdigest()}

    def network(self, cfg: Config, split: ImbalancedSplit) -> Classifier:
        """Stage 1's classifier (its own head, built by its own loss), on the CPU, with its weights."""
        recorded = self.config.get("loss") or {}
        try:
            loss_cfg = LOSSES[recorded["name"]].Config(**recorded)
        except (KeyError, TypeError, ConfigError) as exc:
            raise ConfigError("decoupled.stage1", str(self.folder),
                              f"a run whose recorded loss this version can rebuild ({exc})") from exc
        head_of = build_loss(loss_cfg, split.class_counts["train"]).make_head
        net = build_model(cfg.model.name, split.in_channels, split.num_classes, split.mean, split.std,
                          cfg.model.embedding_dim, make_head=head_of, image_size=split.image_size,
                          standardize=cfg.data.standardize, bn_momentum=cfg.model.bn_momentum,
                          bn_eps=cfg.model.bn_eps)
        try:
            net.load_state_dict(self.weights)
        except RuntimeError as exc:
            raise ConfigError("decoupled.stage1", str(self.folder), "a run whose model.pt fits this model "
                              f"({' '.join(str(exc).split())[:200]})") from exc
        return net


def _read_metrics(folder: Path) -> dict | None:
    try:
        metrics = json.loads((folder / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def _usable(metrics: dict | None, folder: Path) -> bool:
    return bool(metrics) and metrics.get("status") == "done" and (folder / FINAL_WEIGHTS).is_file() \
        and (metrics.get("config") or {}).get("method", "supervised") in STAGE1_METHODS


def find_stage1(given: str, fingerprint: str, seed: int) -> Path:
    """``decoupled.stage1``: a run folder as given, or in a sweep folder the one finished run of this data split
    (fingerprint) and seed."""
    root = Path(given).expanduser().resolve()
    if (root / METRICS_FILE).is_file() or (root / ".hydra").is_dir():
        return root
    runs = sorted(p.parent for p in root.glob(f"*/{METRICS_FILE}"))
    usable = [(p, m) for p, m in ((p, _read_metrics(p)) for p in runs) if _usable(m, p)]
    matching = [p for p, m in usable if (m.get("data") or {}).get("fingerprint") == fingerprint and m.get("seed") == seed]
    if len(matching) == 1:
        return matching[0]
    if matching:
        raise ConfigError("decoupled.stage1", given, "one run of this data split and seed, or that run's folder "
                          f"({root} holds {len(matching)}: {', '.join(p.name for p in matching)})")
    raise ConfigError("decoupled.stage1", given, f"a finished run's folder, or a sweep folder holding the finished "
                      f"run of this data split (fingerprint {fingerprint}) and seed {seed} ({root} holds "
                      f"{len(usable)} finished runs with a model.pt, none of them)")


def load_stage1(cfg: Config, split: ImbalancedSplit) -> Stage1:
    """The stage-1 run, checked: finished, a classifier's weights kept, this run's data split and model."""
    given = cfg.decoupled.stage1
    folder = find_stage1(given, split.fingerprint, cfg.seed)
    metrics = _read_metrics(folder)

    def need(ok: bool, allowed: str) -> None:
        check(ok, "decoupled.stage1", given, allowed)

    need(metrics is not None, f"a finished run's folder ({folder} has no readable {METRICS_FILE})")
    need(metrics.get("status") == "done", f"a finished run ({folder}: status {metrics.get('status')})")
    method = (metrics.get("config") or {}).get("method", "supervised")
    need(method in STAGE1_METHODS, f"a run of method {' or '.join(STAGE1_METHODS)}, a classifier on features "
                                   f"({folder} is method={method})")
    need((folder / FINAL_WEIGHTS).is_file(), f"a run that kept its weights ({folder} has no {FINAL_WEIGHTS})")
    theirs = (metrics.get("data") or {}).get("fingerprint")
    if theirs != split.fingerprint:
        recorded = (metrics.get("config") or {}).get("data") or {}
        ours = dataclasses.asdict(cfg.data)
        differ = [f"data.{k}={recorded[k]} (this run: {ours[k]})" for k in sorted(set(recorded) & set(ours))
                  if recorded[k] != ours[k] and k not in ("root", "download_dir")][:3]
        need(False, f"a run of this data split (fingerprint {split.fingerprint}); {folder} was trained on "
                    f"fingerprint {theirs}" + (f": {', '.join(differ)}" if differ else ""))
    recorded_model = (metrics.get("config") or {}).get("model") or {}
    ours_model = dataclasses.asdict(cfg.model)
    differ = [f"model.{k}={recorded_model[k]} (this run: {ours_model[k]})"
              for k in sorted(set(recorded_model) & set(ours_model)) if k != "pretrained"
              and recorded_model[k] != ours_model[k]]
    need(not differ, f"a run of this model; {folder} has {', '.join(differ)}")
    weights = torch.load(folder / FINAL_WEIGHTS, map_location="cpu", weights_only=True)
    return Stage1(folder, metrics, weights)


def check_config(cfg: Config) -> None:
    """The config-time checks of a ``method=decoupled`` run (``configstore.validate``); the stage-1 run itself is
    checked once the data split is known (:func:`load_stage1`)."""
    d = cfg.decoupled
    one_of("decoupled.mode", d.mode, MODES)
    check(d.stage1 is not None and str(d.stage1).strip() != "", "decoupled.stage1", d.stage1,
          "the folder of a finished stage-1 run, or of a sweep holding it (method=decoupled trains on its features)")
    where = Path(d.stage1).expanduser().resolve()
    check(where.is_dir(), "decoupled.stage1", d.stage1,
          f"an existing folder ({where} {'is not a folder' if where.exists() else 'does not exist'})")
    if d.mode == "tau_norm" and d.tau is None:
        check(cfg.data.val_fraction > 0, "decoupled.tau", d.tau, "a number >= 0, or null with data.val_fraction > 0 "
                                                                "(τ is then chosen on the validation split, never on test)")
    check(getattr(cfg.model, "pretrained", None) is None, "model.pretrained", getattr(cfg.model, "pretrained", None),
          "null with method=decoupled (the weights are the stage-1 run's)")


# ----------------------------------------------------------------------------- stage 2
@dataclass
class Stage2:
    """What every mode works with."""

    cfg: Config
    split: ImbalancedSplit
    net: Classifier  # stage 1's network, on the device
    loss_fn: ImbalanceLoss  # the stage-2 loss (the run's ``loss``)
    sets: dict
    precision: Precision
    generator: torch.Generator
    info: dict  # metrics.json's ``decoupled`` entry

    def linear_head(self) -> nn.Linear:
        head = self.net.head
        check(type(head) is nn.Linear, "decoupled.mode", self.cfg.decoupled.mode,
              f"crt with this stage 1 (tau_norm and lws rescale a linear classifier's class vectors; stage 1's head "
              f"is {type(head).__name__}, from loss={self.info['stage1_loss']})")
        return head

    def evaluator(self, model: nn.Module) -> Evaluator:
        return Evaluator(self.split, self.sets, model, self.loss_fn, self.precision)


def retrain(s: Stage2, head: nn.Module) -> Outcome:
    """Train ``head`` on the frozen features (crt, lws) with the run's sampler, loss, optimiser and schedule."""
    frozen = s.cfg.decoupled.backbone_bn == "frozen"
    model = FrozenFeatures(s.net, head, frozen_statistics=frozen).to(s.net.mean.device)
    # frozen statistics need no recalibration (it would recompute stage 1's, from other batches)
    trainer_cfg = dataclasses.replace(s.cfg.trainer, bn_recalibration_batches=0) if frozen else s.cfg.trainer
    x = torch.from_numpy(s.split.train_x).to(model.mean.device)
    y = torch.from_numpy(s.split.train_y).to(model.mean.device)
    evaluator = s.evaluator(model)
    history = fit(model, s.loss_fn, x, y, trainer_cfg=trainer_cfg, optim_cfg=s.cfg.optim, augment=s.cfg.data.augment,
                  generator=s.generator, sampler=s.cfg.sampler, on_eval=evaluator)
    if isinstance(head, LearnedScales):
        s.info["scales"] = head.scales.detach().cpu().tolist()
    return evaluator.outcome(history, s.loss_fn.extra_metrics() | {"decoupled": s.info})


def crt(s: Stage2) -> Outcome:
    return retrain(s, s.loss_fn.make_head(s.net.embedding_dim, s.split.num_classes))


def lws(s: Stage2) -> Outcome:
    head = s.linear_head()
    check(isinstance(s.loss_fn.make_head(s.net.embedding_dim, s.split.num_classes), nn.Linear), "loss.name",
          s.cfg.loss.name, "a loss on linear logits with decoupled.mode=lws (this one brings a head of its own)")
    return retrain(s, LearnedScales(head))


@torch.no_grad()
def choose_tau(s: Stage2, head: nn.Linear) -> list[dict]:
    """Validation balanced accuracy of every τ of the grid (the features computed once)."""
    x, y = s.sets["val"]
    features = torch.from_numpy(evaluate(s.net, s.loss_fn, x, y, s.precision, with_features=True)["features"])
    features = features.to(x.device)
    y_true = y.cpu().numpy()
    out = []
    for tau in s.cfg.decoupled.tau_grid:
        normed = tau_normalised(head, tau, s.cfg.decoupled.tau_norm_bias)
        with s.precision.compute():
            logits = s.precision.logits(normed(features))
        y_pred = s.loss_fn.scores(logits).argmax(1).cpu().numpy()
        out.append({"tau": float(tau), "val_balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred))})
    return out


def tau_norm(s: Stage2) -> Outcome:
    head = s.linear_head()
    tau = s.cfg.decoupled.tau
    if tau is None:
        search = choose_tau(s, head)
        tau = max(search, key=lambda r: r["val_balanced_accuracy"])["tau"]  # the first of equals
        s.info |= {"tau_search": search, "tau_chosen_on": "validation balanced accuracy"}
    else:
        s.info["tau_chosen_on"] = "given (decoupled.tau)"
    s.info["tau"] = float(tau)
    s.net.head = tau_normalised(head, tau, s.cfg.decoupled.tau_norm_bias)
    evaluator = s.evaluator(s.net)
    evaluator(0)
    log.info("tau-normalised classifier, tau %g (%s)", tau, s.info["tau_chosen_on"])
    return evaluator.outcome([], s.loss_fn.extra_metrics() | {"decoupled": s.info})


# decoupled.mode -> stage 2
MODES: dict[str, Callable[[Stage2], Outcome]] = {"crt": crt, "tau_norm": tau_norm, "lws": lws}


def decoupled_outcome(cfg: Config, split: ImbalancedSplit, device: torch.device, generator: torch.Generator
                      ) -> Outcome:
    """Stage 2 on the stage-1 run ``decoupled.stage1`` (module docstring)."""
    stage1 = load_stage1(cfg, split)
    log.info("decoupled %s on stage 1 %s", cfg.decoupled.mode, stage1.folder)
    precision = Precision.of(cfg.trainer, device)
    net = precision.prepare(stage1.network(cfg, split).to(device))
    loss_fn = build_loss(cfg.loss, split.class_counts["train"]).to(device)
    info = {"mode": cfg.decoupled.mode, "stage1": stage1.record(),
            "stage1_loss": (stage1.config.get("loss") or {}).get("name"), "backbone_bn": cfg.decoupled.backbone_bn}
    sets = eval_sets(split, device, getattr(cfg.trainer, "fast_dev_run", False))
    return MODES[cfg.decoupled.mode](Stage2(cfg, split, net, loss_fn, sets, precision, generator, info))
