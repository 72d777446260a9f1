"""How the members of a stack take their optimisation steps. The training loop (``trainer.fit_stack``) is
the same for every engine: it draws each member's batches with the member's own generator, and an engine
turns them into one optimisation step per member.

- :class:`LoopEngine`: each member steps its own model and optimiser, one after another. On CPU this is
  the fast way (vmapped convolutions are slow there), and a stack of one is exactly a plain training loop.
- :class:`VmapEngine`: one stacked model — every parameter and buffer of the K members stacked along a new
  first dimension (``torch.func.stack_module_state``), one ``vmap``-ed forward over all members, each
  member's own loss on its slice of the logits, one optimiser over the stacked tensors (Adam and SGD
  update elementwise, so this is every member's own optimiser). The way to fill a GPU with small models.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch.func import functional_call, stack_module_state

from .optim import build_optimizer, build_scheduler, exclude_norm_and_bias_from_decay
from .precision import Precision

log = logging.getLogger(__name__)


def param_groups(model, loss_fn, weight_decay: float) -> list[dict]:
    """All trainable parameters of the model and the loss; those flagged ``no_weight_decay`` get none."""
    return decay_groups(model_and_loss_parameters(model, loss_fn), weight_decay)


def decay_groups(named_params, weight_decay: float) -> list[dict]:
    """Optimiser parameter groups: with weight decay, and without for those flagged ``no_weight_decay``."""
    params = [p for _, p in named_params if p.requires_grad]
    decay = [p for p in params if not getattr(p, "no_weight_decay", False)]
    no_decay = [p for p in params if getattr(p, "no_weight_decay", False)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def model_and_loss_parameters(model, loss_fn) -> list[tuple[str, torch.nn.Parameter]]:
    """All trainable parameters of the model and the loss, shared ones (a loss holding the model's head,
    e.g. the affinity centres) counted once."""
    seen, out = set(), []
    for name, p in [*model.named_parameters(), *loss_fn.named_parameters()]:
        if id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    return out


class LoopEngine:
    """Each member: forward, its loss, backward, its optimiser's step — one member after another."""

    name = "loop"

    def __init__(self, members, trainer_cfg, optim_cfg, steps: int, epochs: int, precision: Precision):
        self.members, self.precision = members, precision
        for m in members:
            precision.prepare(m.model)
        self.optimizers = [build_optimizer(param_groups(m.model, m.loss_fn, optim_cfg.weight_decay), optim_cfg)
                           for m in members]
        self.schedulers = [build_scheduler(o, steps, epochs, optim_cfg) for o in self.optimizers]
        self.forwards = [torch.compile(m.model) if trainer_cfg.compile else m.model for m in members]

    def lr(self) -> float:
        return self.optimizers[0].param_groups[0]["lr"]

    def step(self, batches, active) -> list[torch.Tensor | Exception | None]:
        """Each active member's step; its loss, None (inactive), or the exception its step raised (that member
        alone fails: the others are separate models)."""
        losses = []
        for k, ((xb, yb), on) in enumerate(zip(batches, active)):
            if not on:
                losses.append(None)
                continue
            try:
                with self.precision.compute():
                    logits = self.precision.logits(self.forwards[k](self.precision.inputs(xb)))
                loss = self.members[k].loss_fn(logits, yb)
                self.optimizers[k].zero_grad(set_to_none=True)
                loss.backward()
                self.optimizers[k].step()
                self.schedulers[k].step()
            except Exception as exc:  # noqa: BLE001 - recorded as the member's failure by fit_stack
                losses.append(exc)
                continue
            losses.append(loss.detach())
        return losses

    def optim_state(self, k: int) -> dict:
        return {"optimizer": self.optimizers[k].state_dict(), "scheduler": self.schedulers[k].state_dict()}

    def load_optim_states(self, states: list[dict]) -> None:
        for optimizer, scheduler, state in zip(self.optimizers, self.schedulers, states):
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])

    def live_weights(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's current weights and buffers by state-dict name: its module's own."""
        return self.members[k].model.state_dict()

    def to_members(self) -> None:
        """The members' modules hold the current weights (they always do here)."""

    def from_members(self) -> None:
        """Take back what evaluation changed in the members' modules (nothing to do here)."""


class VmapEngine:
    """One vmapped forward over the stacked members, each member's own loss, one optimiser."""

    name = "vmap"

    def __init__(self, members, trainer_cfg, optim_cfg, steps: int, epochs: int, precision: Precision):
        self.members, self.precision = members, precision
        models = [precision.prepare(m.model) for m in members]
        self.params, self.buffers = stack_module_state(models)
        if precision.channels_last:  # (K, O, I, kh, kw) laid out as (K, O, kh, kw, I): channels-last per member
            for n, p in self.params.items():
                if p.dim() == 5:
                    p.data = p.data.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
        base = copy.deepcopy(models[0]).to("meta")

        def one(params, buffers, xb):
            return functional_call(base, (params, buffers), (xb,))

        self.forward = torch.vmap(one, in_dims=(0, 0, 0))
        if trainer_cfg.compile:
            self.forward = torch.compile(self.forward)
        flags = dict(models[0].named_parameters())
        named = list(self.params.items())
        for n, p in named:
            if getattr(flags[n], "no_weight_decay", False):
                p.no_weight_decay = True
        self.optimizer = build_optimizer(decay_groups(named, optim_cfg.weight_decay), optim_cfg)
        self.scheduler = build_scheduler(self.optimizer, steps, epochs, optim_cfg)
        # the model parameters a loss uses itself (the affinity centres for its regulariser), by name
        self.loss_params = [[n for n, _ in m.loss_fn.named_parameters()] for m in members]

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self, batches, active) -> list[torch.Tensor | Exception | None]:
        """One step of the stacked model. A member whose own loss raises is dropped from the step (its loss,
        hence its gradient, left out; the exception returned in its place) and the others step as before; an
        error in the shared forward or backward fails the whole stack."""
        xs = self.precision.stacked_inputs(torch.stack([xb for xb, _ in batches]))
        with self.precision.compute():
            logits = self.precision.logits(self.forward(self.params, self.buffers, xs))
        losses, total = [], None
        for k, (m, (_, yb), on) in enumerate(zip(self.members, batches, active)):
            if not on:
                losses.append(None)
                continue
            own = {n: self.params[n][k] for n in self.loss_params[k]}
            try:
                loss = functional_call(m.loss_fn, own, (logits[k], yb)) if own else m.loss_fn(logits[k], yb)
            except Exception as exc:  # noqa: BLE001 - recorded as the member's failure by fit_stack
                losses.append(exc)
                continue
            losses.append(loss.detach())
            total = loss if total is None else total + loss
        self.optimizer.zero_grad(set_to_none=True)
        if total is not None:
            total.backward()
            self.optimizer.step()
        self.scheduler.step()
        return losses

    def optim_state(self, k: int) -> dict:
        """Member k's slice of the stacked optimiser state (tensors with the stack's leading dimension)."""
        K = len(self.members)
        full = self.optimizer.state_dict()
        state = {i: {key: (v[k].clone() if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == K else v)
                     for key, v in s.items()} for i, s in full["state"].items()}
        return {"optimizer": {"state": state, "param_groups": full["param_groups"]},
                "scheduler": self.scheduler.state_dict()}

    def load_optim_states(self, states: list[dict]) -> None:
        first = states[0]["optimizer"]
        stacked = {i: {key: (torch.stack([st["optimizer"]["state"][i][key] for st in states])
                             if torch.is_tensor(v) and v.dim() > 0 else v)
                       for key, v in s.items()} for i, s in first["state"].items()}
        self.optimizer.load_state_dict({"state": stacked, "param_groups": first["param_groups"]})
        self.scheduler.load_state_dict(states[0]["scheduler"])

    def live_weights(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's current weights and buffers by state-dict name: views of its slice of the stack, updated
        in place every step (its module gets them only at the end of an epoch, ``to_members``)."""
        stacked = self.params | self.buffers
        return {n: stacked[n].detach()[k] for n in self.members[k].model.state_dict()}

    @torch.no_grad()
    def to_members(self) -> None:
        for k, m in enumerate(self.members):
            for n, t in [*m.model.named_parameters(), *m.model.named_buffers()]:
                t.copy_((self.params if n in self.params else self.buffers)[n][k])

    @torch.no_grad()
    def from_members(self) -> None:
        for k, m in enumerate(self.members):
            for n, t in m.model.named_buffers():
                self.buffers[n][k].copy_(t)


def vmap_obstacle(members) -> str | None:
    """Why these members cannot be one vmapped model (None if they can)."""
    if len(members) < 2:
        return "a stack of one"
    # One module runs every member's weights, so the modules must be alike to the last setting (shapes,
    # and plain attributes such as the affinity head's sigma, which their reprs show).
    shapes = [[(n, tuple(t.shape)) for n, t in [*m.model.named_parameters(), *m.model.named_buffers()]]
              for m in members]
    if any(s != shapes[0] for s in shapes[1:]) or len({repr(m.model) for m in members}) > 1:
        return "the members' models differ in shape or settings"
    for m in members:
        model_params = {id(p) for p in m.model.parameters()}
        if any(id(p) not in model_params for p in m.loss_fn.parameters()):
            return f"loss {type(m.loss_fn).__name__} has parameters of its own"
    return None


def make_engine(members, trainer_cfg, optim_cfg, steps: int, epochs: int, precision: Precision):
    """``trainer.stacking``: ``loop``; ``vmap``; ``auto`` = vmap for a stack of two or more on CUDA, else
    loop. A stack that cannot be vmapped trains as a loop, with the reason logged. ``optim.decay_norm_and_bias
    = false`` flags the members' parameters here, before either engine builds its parameter groups."""
    if not optim_cfg.decay_norm_and_bias:
        for m in members:
            exclude_norm_and_bias_from_decay(m.model, m.loss_fn)
    choice = trainer_cfg.stacking
    if choice == "auto":
        on_cuda = next(members[0].model.parameters()).device.type == "cuda"
        choice = "vmap" if on_cuda and len(members) > 1 else "loop"
    if choice == "vmap":
        obstacle = vmap_obstacle(members)
        if obstacle is None:
            return VmapEngine(members, trainer_cfg, optim_cfg, steps, epochs, precision)
        if len(members) > 1:
            log.warning("stack of %d trains member after member, not vmapped: %s", len(members), obstacle)
    return LoopEngine(members, trainer_cfg, optim_cfg, steps, epochs, precision)
