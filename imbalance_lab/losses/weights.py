"""Per-class weights computed from the training class counts n_c, each normalised so that Σ_c w_c = C.

- ``effective_number_weights`` (Cui et al., "Class-Balanced Loss Based on Effective Number of Samples",
  CVPR 2019): w_c ∝ 1 / E_{n_c} with E_n = (1 − β^n) / (1 − β), i.e. w_c ∝ (1 − β) / (1 − β^{n_c}).
  β = 0 gives w_c = 1 for every class; β → 1 approaches inverse frequency 1/n_c. Used by the ``cb`` loss
  and by deferred re-weighting (DRW, Cao et al. 2019) in every loss.
- ``inverse_frequency_weights``: w_c ∝ n_c^(−power).

Computed in float64 (β^{n_c} with β = 0.9999 and n_c in the thousands) and returned as float32.
"""

from __future__ import annotations

import torch


def _normalise(w: torch.Tensor) -> torch.Tensor:
    return (w * len(w) / w.sum()).float()


def effective_number_weights(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """w_c = (1 − β) / (1 − β^{n_c}), normalised to Σ_c w_c = C."""
    n = torch.as_tensor(counts).double()
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n))
    return _normalise(w)


def inverse_frequency_weights(counts: torch.Tensor, power: float) -> torch.Tensor:
    """w_c = n_c^(−power), normalised to Σ_c w_c = C."""
    return _normalise(torch.as_tensor(counts).double().pow(-power))
