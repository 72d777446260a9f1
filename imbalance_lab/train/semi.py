"""FixMatch's side of a training step (Sohn et al., NeurIPS 2020), as an :class:`~.objective.Objective` of the
one training loop (``fit_stack``): each step appends μB unlabelled images, as a weak view (flip + crop) and a
strong view (flip + crop, RandAugment, Cutout: ``randaugment.strong_augment``), to the B labelled ones — the
batch [labelled | weak | strong] that ``losses.fixmatch.FixMatchLoss`` splits again. After each optimiser step
it updates an exponential moving average of the weights, which is what is evaluated (FixMatch evaluates its
EMA model; decay ``ssl.ema``):

    θ_ema ← d θ_ema + (1 − d) θ    for every parameter and floating buffer (BatchNorm statistics);
    integer buffers (``num_batches_tracked``) copied

as DebiasPL's ``FixMatch.momentum_update_ema`` (github.com/frank-xwang/debiased-pseudo-labeling,
``models/fixmatch.py``). The unlabelled order is a fresh permutation (repeated as needed) each epoch, drawn
from the member's generator after the labelled order, so a run is deterministic under its seed and a
checkpoint (taken between epochs) needs only the EMA weights beside the generator state.

Diagnostics, per epoch, against the unlabelled images' hidden labels (read here, after the step; never given
to the loss): the class distribution of the accepted pseudo-labels, their per-class precision (correct /
accepted as c) and recall (accepted and correct / class-c images drawn), the accepted fraction, L_x and L_u,
and q̂ at the epoch's end; the confusion matrix (hidden label × accepted pseudo-label) of the last epoch."""

from __future__ import annotations

import copy
import math

import torch

from .augment import random_crop_flip
from .objective import Objective


class FixMatchObjective(Objective):
    def __init__(self, model: torch.nn.Module, loss_fn, unlabelled_x: torch.Tensor, hidden_y: torch.Tensor,
                 mu: int, batch_size: int, ema_decay: float):
        # imported here: RandAugment needs torchvision, whose import (~2 s) every other command would pay
        from .randaugment import strong_augment

        self.strong_augment = strong_augment
        self.loss_fn = loss_fn
        self.unlabelled_x, self.hidden_y = unlabelled_x, hidden_y
        self.per_step, self.decay = mu * batch_size, ema_decay
        self.ema = copy.deepcopy(model).requires_grad_(False)
        self.bind_weights(model.state_dict())
        self.num_classes = loss_fn.num_classes
        self.order = torch.empty(0, dtype=torch.long)
        self.drawn: torch.Tensor | None = None
        # the epoch's running counts (start_epoch sizes them): accepted pseudo-labels, images seen per class,
        # sums of the accepted fraction, L_x and L_u, and steps
        self.confusion, self.seen, self.sums, self.steps = torch.empty(0), torch.empty(0), torch.empty(0), 0
        self.final_confusion: list[list[int]] = []

    def bind_weights(self, weights):
        # the tensors share storage with what the optimiser, load_state_dict and BatchNorm update in place, so
        # the (EMA, live) pairs are made once
        pairs = [(e, weights[name]) for name, e in self.ema.state_dict().items()]
        self.averaged = [(e, m) for e, m in pairs if e.dtype.is_floating_point]
        self.copied = [(e, m) for e, m in pairs if not e.dtype.is_floating_point]

    def start_epoch(self, generator, steps):
        n, device = len(self.hidden_y), self.hidden_y.device
        rounds = math.ceil(steps * self.per_step / n)
        self.order = torch.cat([torch.randperm(n, device=device, generator=generator) for _ in range(rounds)])
        c = self.num_classes
        self.confusion = torch.zeros(c * c, device=device)
        self.seen = torch.zeros(c, device=device)
        self.sums = torch.zeros(3, device=device)  # accepted fraction, L_x, L_u (sums over steps)
        self.steps = 0

    def inputs(self, xb, step, generator):
        self.drawn = self.order[step * self.per_step:(step + 1) * self.per_step]
        u = self.unlabelled_x[self.drawn]
        weak = random_crop_flip(u, generator=generator)
        strong = self.strong_augment(random_crop_flip(u, generator=generator), generator)
        return torch.cat([xb, weak, strong])

    @torch.no_grad()
    def after_step(self):
        last, c = self.loss_fn.last, self.num_classes
        hidden = self.hidden_y[self.drawn]
        # fixed-size index_add_, not bincount: bincount sizes its output from the data, a host sync on CUDA
        self.confusion.index_add_(0, hidden * c + last["pseudo"], last["mask"].float())
        self.seen.index_add_(0, hidden, torch.ones_like(hidden, dtype=self.seen.dtype))
        self.sums += torch.stack([last["mask"].float().mean(), last["loss_x"].float(), last["loss_u"].float()])
        self.steps += 1
        for ema, value in self.averaged:
            ema.mul_(self.decay).add_(value, alpha=1 - self.decay)
        for ema, value in self.copied:
            ema.copy_(value)

    def end_epoch(self):
        c = self.num_classes
        confusion = self.confusion.view(c, c).cpu().round().long()
        seen, sums = self.seen.cpu(), (self.sums / max(self.steps, 1)).tolist()
        accepted, correct = confusion.sum(0), confusion.diag()
        self.final_confusion = confusion.tolist()
        return {
            "pseudo_label_counts": accepted.tolist(),
            # None where undefined (no pseudo-label of the class accepted; no image of the class drawn)
            "pseudo_label_precision": [int(t) / int(a) if a else None for t, a in zip(correct, accepted)],
            "pseudo_label_recall": [int(t) / int(s) if s else None for t, s in zip(correct, seen)],
            "pseudo_label_accepted": sums[0], "loss_x": sums[1], "loss_u": sums[2],
            "q_hat": self.loss_fn.q_hat.tolist(),
        }

    def eval_model(self, model):
        return self.ema

    def extra_metrics(self):
        return {"evaluated_model": "ema", "pseudo_label_confusion": self.final_confusion,
                "pseudo_label_confusion_note": "last epoch: rows hidden label, columns accepted pseudo-label"}

    EPOCH_STATE = ("order", "confusion", "seen", "sums", "steps")

    def state_dict(self):
        # with the epoch's unlabelled order and running counts, for a checkpoint taken inside an epoch
        return {"ema": self.ema.state_dict(), "epoch": {k: getattr(self, k) for k in self.EPOCH_STATE}}

    def load_state_dict(self, state):
        self.ema.load_state_dict(state["ema"])
        device = self.hidden_y.device
        for key, value in state.get("epoch", {}).items():
            setattr(self, key, value.to(device) if torch.is_tensor(value) else value)
