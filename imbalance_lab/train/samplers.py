"""Class-aware resampling on the device: each epoch is a tensor of training indices.

- ``uniform``: every image once, shuffled.
- ``oversample``: class-balanced sampling with replacement (every class drawn with probability 1/C).
- ``sqrt``: with replacement, class c drawn with probability ∝ n_c^0.5 (square-root sampling).
- ``undersample``: every class cut, afresh each epoch, to the size of the smallest class (no replacement).

``oversample`` and ``sqrt`` draw as many images per epoch as the training split has, so an epoch costs the
same as with ``uniform``; ``undersample`` epochs are C · min_c n_c images.
"""

import torch


def class_probabilities(kind: str, class_counts: torch.Tensor) -> torch.Tensor:
    """The target probability of drawing each class."""
    counts = class_counts.double()
    if kind == "uniform":
        p = counts
    elif kind in ("oversample", "undersample"):
        p = torch.ones_like(counts)
    else:  # sqrt
        p = counts.sqrt()
    return p / p.sum()


def epoch_size(kind: str, class_counts) -> int:
    counts = torch.as_tensor(class_counts)
    return int(len(counts) * counts.min()) if kind == "undersample" else int(counts.sum())


def epoch_indices(kind: str, labels: torch.Tensor, class_counts: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
    n = len(labels)
    if kind == "uniform":
        return torch.randperm(n, device=labels.device, generator=generator)
    if kind == "undersample":
        perm = torch.randperm(n, device=labels.device, generator=generator)
        keep = int(class_counts.min())
        picked = torch.cat([perm[labels[perm] == c][:keep] for c in range(len(class_counts))])
        return picked[torch.randperm(len(picked), device=labels.device, generator=generator)]
    # Per-image weight = class probability / class size, so each class is drawn with its target probability.
    class_p = class_probabilities(kind, class_counts).to(labels.device)
    weights = (class_p / class_counts.double().to(labels.device))[labels]
    return torch.multinomial(weights.float(), n, replacement=True, generator=generator)
