"""Per-class image counts of the imbalance profiles; r = data.imbalance >= 1.

Each function returns one count per class and raises :class:`ConfigError` on ``data.imbalance`` when r
leaves a class with no image. ``class_names`` and ``split`` only word that message.
"""

from __future__ import annotations

from collections.abc import Sequence

from imbalance_lab.schema import ConfigError


def exp_counts(n_max: int, num_classes: int, r: float, class_names: Sequence[str] | None = None,
               split: str = "training") -> list[int]:
    """Long-tailed: n_i = floor(n_max · r^(−i/(C−1))), i = 0..C−1 (Cui et al. 2019)."""
    # Written exactly as the reference code (LDAM-DRW's imbalance_cifar.py) so the float rounding, and
    # with it the published totals (CIFAR-10-LT r=100: 12406), come out the same.
    counts = [int(n_max * (1 / r) ** (i / (num_classes - 1.0))) for i in range(num_classes)]
    # The last class gets int(n_max * (1/r)); rounding of 1/r can make that 0 at r = n_max itself.
    limit = f"at most {n_max}" if int(n_max * (1 / n_max)) >= 1 else f"below {n_max}"
    return _nonzero(counts, r, limit, class_names, split)


def step_counts(n_max: int, num_classes: int, r: float, class_names: Sequence[str] | None = None,
                split: str = "training") -> list[int]:
    """Step: the first C//2 classes n_max, the others floor(n_max / r)."""
    many = num_classes // 2
    counts = [n_max] * many + [int(n_max / r)] * (num_classes - many)
    return _nonzero(counts, r, f"at most {n_max}", class_names, split)


def reduce_counts(available: Sequence[int], reduced_mask: Sequence[bool], n_max: int, r: float,
                  class_names: Sequence[str] | None = None, split: str = "training") -> list[int]:
    """Reduced classes min(available, floor(n_max / r)); the others keep all they have."""
    few = int(n_max / r)
    counts = [min(int(a), few) if reduced else int(a) for a, reduced in zip(available, reduced_mask)]
    return _nonzero(counts, r, f"at most {n_max}", class_names, split)


def _nonzero(counts: list[int], r: float, limit: str, class_names: Sequence[str] | None,
             split: str) -> list[int]:
    if 0 in counts:
        c = counts.index(0)
        name = f" '{class_names[c]}'" if class_names is not None else ""
        raise ConfigError("data.imbalance", r, f"{limit} (larger r leaves class {c}{name} with no {split} image)")
    return counts


def held_out_count(fraction: float, n: int) -> int:
    """Images of a class of ``n`` held out (validation, an image folder's test part): round(fraction · n), at
    least 1 once the class has 2 images, never the whole class."""
    if fraction == 0 or n < 2:
        return 0
    return min(max(round(fraction * n), 1), n - 1)
