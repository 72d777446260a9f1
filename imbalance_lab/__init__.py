"""imbalance_lab: experiments on class-imbalanced image data."""
__version__ = "0.1.0"
