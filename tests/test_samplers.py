"""Resampling: each sampler's empirical class frequencies over many epochs match its target."""

import pytest
import torch

from imbalance_lab.train.samplers import epoch_indices, epoch_size

COUNTS = torch.tensor([1000, 300, 100, 10])
LABELS = torch.repeat_interleave(torch.arange(4), COUNTS)


def class_frequencies(kind: str, epochs: int = 20) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    drawn = torch.cat([LABELS[epoch_indices(kind, LABELS, COUNTS, g)] for _ in range(epochs)])
    return torch.bincount(drawn, minlength=4).double() / len(drawn)


def test_uniform_is_a_permutation():
    g = torch.Generator().manual_seed(0)
    idx = epoch_indices("uniform", LABELS, COUNTS, g)
    assert sorted(idx.tolist()) == list(range(len(LABELS)))


def test_oversample_balances_classes_within_one_point():
    # 20 epochs x 1410 draws: the sd of each frequency is about 0.003; 0.01 is over 3 sd
    freq = class_frequencies("oversample")
    torch.testing.assert_close(freq, torch.full((4,), 0.25, dtype=torch.float64), atol=0.01, rtol=0)


def test_sqrt_sampling_follows_square_root_of_counts():
    target = COUNTS.double().sqrt() / COUNTS.double().sqrt().sum()
    torch.testing.assert_close(class_frequencies("sqrt"), target, atol=0.01, rtol=0)


def test_undersample_cuts_every_class_to_the_smallest_without_repeats():
    g = torch.Generator().manual_seed(0)
    idx = epoch_indices("undersample", LABELS, COUNTS, g)
    assert len(idx) == epoch_size("undersample", COUNTS.tolist()) == 40
    assert len(set(idx.tolist())) == 40
    assert torch.bincount(LABELS[idx], minlength=4).tolist() == [10, 10, 10, 10]
    # a fresh subset each epoch
    assert set(epoch_indices("undersample", LABELS, COUNTS, g).tolist()) != set(idx.tolist())


@pytest.mark.parametrize("kind", ["oversample", "sqrt"])
def test_epoch_size_equals_training_split(kind):
    g = torch.Generator().manual_seed(0)
    assert len(epoch_indices(kind, LABELS, COUNTS, g)) == epoch_size(kind, COUNTS.tolist()) == 1410
