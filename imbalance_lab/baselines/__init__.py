"""Baselines that are not "a loss on the usual classifier": they replace fit/evaluate for a run."""

from .decoupled import decoupled_outcome
from .majority_only import Gaussian, Threshold, mahalanobis_scores, majority_only_outcome, run_majority_only

__all__ = ["Gaussian", "Threshold", "decoupled_outcome", "mahalanobis_scores", "majority_only_outcome",
           "run_majority_only"]
