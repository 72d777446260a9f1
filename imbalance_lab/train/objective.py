"""What one training step of a member computes, around its loss: the inputs of its forward, made from the
labelled batch the loop drew and augmented, and what happens after its optimiser step. ``fit_stack`` calls
these hooks for every member; the supervised objective (this base class) trains on the labelled batch as is
and evaluates the trained weights. ``train.semi.FixMatchObjective`` adds the unlabelled views, an EMA of the
weights and the pseudo-label diagnostics."""

from __future__ import annotations

import torch


class Objective:
    def bind_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """``weights``: by state-dict name, the tensors that hold the member's current weights and buffers
        during training — its module's own, or its slice of a vmapped stack (``engine.live_weights``), which
        the module only receives at the end of an epoch. Called once the engine is built."""

    def start_epoch(self, generator: torch.Generator, steps: int) -> None:
        """Before the epoch's first step, after the loop drew the labelled order from ``generator``."""

    def inputs(self, xb: torch.Tensor, step: int, generator: torch.Generator) -> torch.Tensor:
        """The uint8 batch the model is run on in ``step``, from the augmented labelled batch ``xb``."""
        return xb

    def after_step(self) -> None:
        """After the member's optimiser step."""

    def end_epoch(self) -> dict:
        """Entries for the epoch's history record (one host sync per epoch at most)."""
        return {}

    def eval_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The weights evaluated (and kept as ``model.pt``): the trained ones."""
        return model

    def extra_metrics(self) -> dict:
        """Objective state for the run's metrics file."""
        return {}

    def state_dict(self) -> dict:
        """What a checkpoint must carry to continue (beside the model, loss, optimiser and generator), also
        from inside an epoch (what ``start_epoch`` drew and the steps since accumulated)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
