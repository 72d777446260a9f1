"""CNN backbones and the classifier that puts a head on them."""

from .classifier import BACKBONES, Classifier, build_model

__all__ = ["BACKBONES", "Classifier", "build_model"]
