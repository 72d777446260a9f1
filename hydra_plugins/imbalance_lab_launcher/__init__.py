"""imbalance_lab's Hydra launcher plugin: ``hydra/launcher=stacked``."""
