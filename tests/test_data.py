"""Data layer: profile counts, exact per-class counts on the real mirror, nesting, validation, failures.

The real-data tests read the offline mirror named by $IMBALANCE_LAB_DATA (CI sets it to ../shared/data).
"""

from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
from PIL import Image

from imbalance_lab.data import DatasetUnavailable, build_split
from imbalance_lab.data.profiles import exp_counts, reduce_counts, step_counts
from imbalance_lab.data.sources import load_source, make_synthetic
from imbalance_lab.schema import ConfigError, DataConfig, SyntheticConfig

MNIST_TRAIN = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
EVEN = [0, 2, 4, 6, 8]
CIFAR10_LT_R100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
CIFAR10_LT_R10 = [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]


# ----------------------------------------------------------------------------- presets (configs/data/*.yaml)
def mnist_even(r, test_policy="reduced", test_n_max=1000, **kw):
    return DataConfig(name="mnist_even", source="mnist", profile="reduce", reduced_classes=EVEN, n_max=6000,
                      imbalance=r, test_policy=test_policy, test_n_max=test_n_max, augment=False, **kw)


def cifar10_even(r, **kw):
    return DataConfig(name="cifar10_even", source="cifar10", profile="reduce", reduced_classes=EVEN, n_max=5000,
                      imbalance=r, test_policy="reduced", test_n_max=1000, augment=False, **kw)


def cifar2(r, **kw):
    return DataConfig(name="cifar2", source="cifar10", classes=[0, 1], profile="reduce", reduced_classes=[1],
                      imbalance=r, test_policy="balanced", **kw)


def cifar10_lt(r, profile="exp", **kw):
    return DataConfig(name="cifar10_lt", source="cifar10", profile=profile, imbalance=r, **kw)


def synthetic_lt(r, num_classes=100, **kw):
    """The cifar100_lt preset on a generated 100-class source with CIFAR-100's sizes (500 / 100 per class)."""
    return DataConfig(name="synthetic", source="synthetic", profile="exp", imbalance=r,
                      synthetic=SyntheticConfig(num_classes=num_classes, train_per_class=500, test_per_class=100),
                      **kw)


def reduced(available, r, n_ref, reduced_classes=EVEN):
    return [min(a, n_ref // r) if c in reduced_classes else a for c, a in enumerate(available)]


# ----------------------------------------------------------------------------- pure profile functions
@pytest.mark.parametrize("r, total", [(200, 11203), (100, 12406), (50, 13996), (20, 17023), (10, 20431)])
def test_exp_counts_cifar10_lt_totals(r, total):
    assert sum(exp_counts(5000, 10, r)) == total


@pytest.mark.parametrize("r, total", [(200, 9502), (100, 10847), (50, 12608), (20, 15907), (10, 19573)])
def test_exp_counts_cifar100_lt_totals(r, total):
    assert sum(exp_counts(500, 100, r)) == total


def test_exp_counts_lists():
    assert exp_counts(5000, 10, 100) == CIFAR10_LT_R100
    assert exp_counts(5000, 10, 10) == CIFAR10_LT_R10
    assert exp_counts(500, 100, 200)[-1] == 2
    assert exp_counts(5000, 10, 1) == [5000] * 10


def test_step_and_reduce_counts():
    assert step_counts(5000, 10, 10) == [5000] * 5 + [500] * 5
    assert step_counts(500, 5, 3) == [500, 500, 166, 166, 166]
    assert reduce_counts([5923, 6742], [True, False], 6000, 100) == [60, 6742]
    assert reduce_counts([5923, 6742], [True, False], 6000, 1) == [5923, 6742]


@pytest.mark.parametrize("counts, empty", [
    (lambda names: exp_counts(5000, 10, 6000, names), "class 9 'truck'"),
    (lambda names: step_counts(5000, 10, 5001, names), "class 5 'dog'"),
    (lambda names: reduce_counts([5000] * 10, [c == 9 for c in range(10)], 5000, 5001, names), "class 9 'truck'"),
])
def test_empty_class_is_a_config_error(counts, empty):
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with pytest.raises(ConfigError) as err:
        counts(names)
    assert err.value.key == "data.imbalance"
    assert str(err.value).endswith(f"at most 5000 (larger r leaves {empty} with no training image)")


def test_exp_limit_is_honest_about_float_rounding():
    # int(49 * (1/49)) == 0: at r = n_max = 49 the last class is already empty.
    with pytest.raises(ConfigError, match="below 49"):
        exp_counts(49, 3, 49)
    assert exp_counts(50, 3, 50)[-1] == 1


# ----------------------------------------------------------------------------- synthetic source
def test_synthetic_is_deterministic_fast_and_separable():
    cfg = SyntheticConfig(num_classes=100, train_per_class=500, test_per_class=100)
    start = time.perf_counter()
    raw = make_synthetic(cfg)
    assert time.perf_counter() - start < 2.0
    assert raw.train_images.shape == (50000, 32, 32, 3) and raw.train_images.dtype == np.uint8
    assert np.bincount(raw.train_labels).tolist() == [500] * 100
    assert np.bincount(raw.test_labels).tolist() == [100] * 100
    # Classes are distinct: nearest class mean already classifies the test set.
    means = np.stack([raw.train_images[raw.train_labels == k].reshape(500, -1).mean(0) for k in range(100)])
    means = means.astype(np.float32)
    t = raw.test_images.reshape(10000, -1).astype(np.float32)
    pred = np.argmin((means**2).sum(1) - 2 * t @ means.T, axis=1)
    assert (pred == raw.test_labels).mean() > 0.95


def test_synthetic_is_fixed_by_its_seed_and_grayscale_works():
    cfg = SyntheticConfig(num_classes=3, train_per_class=4, test_per_class=2, image_size=8, channels=1)
    raw, again, other = make_synthetic(cfg), make_synthetic(cfg), make_synthetic(SyntheticConfig(seed=1))
    assert raw.train_images.shape == (12, 8, 8, 1) and raw.test_images.shape == (6, 8, 8, 1)
    assert np.array_equal(raw.train_images, again.train_images) and np.array_equal(raw.test_labels, again.test_labels)
    assert not np.array_equal(make_synthetic(SyntheticConfig()).train_images, other.train_images)


# ----------------------------------------------------------------------------- CIFAR-100-LT code path (synthetic)
@pytest.mark.parametrize("r, total", [(100, 10847), (200, 9502)])
def test_cifar100_lt_path_on_synthetic(r, total):
    split = build_split(synthetic_lt(r))
    assert split.class_counts["train"] == exp_counts(500, 100, r)
    assert sum(split.class_counts["train"]) == total == len(split.train_y)
    assert split.class_counts["test"] == [100] * 100
    assert split.train_x.shape == (total, 3, 32, 32) and split.train_x.dtype == np.uint8
    assert split.train_y.dtype == np.int64 and split.val_x.shape == (0, 3, 32, 32) and split.val_y.shape == (0,)
    if r == 200:
        assert split.class_counts["train"][-1] == 2


# ----------------------------------------------------------------------------- real MNIST
@pytest.mark.parametrize("r", [1, 10, 100])
def test_mnist_even_counts(mirror, r):
    split = build_split(mnist_even(r))
    assert split.class_counts["train"] == reduced(MNIST_TRAIN, r, 6000)
    assert split.class_counts["test"] == reduced(MNIST_TEST, r, 1000)
    assert split.class_names == [str(d) for d in range(10)]
    assert split.train_x.shape[1:] == (1, 28, 28) and (split.in_channels, split.image_size) == (1, 28)
    assert split.description == f"MNIST (offline mirror {os.path.abspath(mirror)})" and split.note == ""
    if r == 1:  # the full training set: the published normalisation constants
        assert split.class_counts["train"] == MNIST_TRAIN
        assert split.mean[0] == pytest.approx(0.1307, abs=1e-4) and split.std[0] == pytest.approx(0.3081, abs=1e-4)


def test_mnist_even_balanced_test(mirror):
    split = build_split(mnist_even(10, test_policy="balanced"))
    assert split.class_counts["train"] == [600, 6742, 600, 6131, 600, 5421, 600, 6265, 600, 5949]
    assert split.class_counts["test"] == MNIST_TEST
    assert np.array_equal(split.indices["test"], np.arange(10000))


def test_mnist_even_empty_test_class_is_a_config_error(mirror):
    with pytest.raises(ConfigError, match=r"data\.imbalance=2000 .*at most 1000"):
        build_split(mnist_even(2000))
    # Without test_n_max the reference is the largest test class (1135): caught when the counts are cut.
    with pytest.raises(ConfigError, match=r"data\.imbalance=1200 .*at most 1135 .*class 0 '0' with no test image"):
        build_split(mnist_even(1200, test_n_max=None))


# ----------------------------------------------------------------------------- real CIFAR-10 (lossy JPEG mirror)
@pytest.mark.parametrize("r, minority", [(1, 5000), (10, 500), (100, 50)])
def test_cifar2_counts(mirror, r, minority):
    split = build_split(cifar2(r))
    assert split.class_names == ["airplane", "automobile"]
    assert split.class_counts["train"] == [5000, minority]
    assert split.class_counts["test"] == [1000, 1000]
    assert set(np.unique(split.train_y)) == {0, 1}


@pytest.mark.parametrize("r, counts", [(100, CIFAR10_LT_R100), (10, CIFAR10_LT_R10)])
def test_cifar10_lt_exp_counts(mirror, r, counts):
    split = build_split(cifar10_lt(r))
    assert split.class_counts["train"] == counts
    assert split.class_counts["test"] == [1000] * 10


def test_cifar10_lt_step_counts(mirror):
    split = build_split(cifar10_lt(10, profile="step"))
    assert split.class_counts["train"] == [5000] * 5 + [500] * 5
    assert split.class_counts["test"] == [1000] * 10


@pytest.mark.parametrize("r", [2, 50])
def test_cifar10_even_counts(mirror, r):
    split = build_split(cifar10_even(r))
    assert split.class_counts["train"] == reduced([5000] * 10, r, 5000)
    assert split.class_counts["test"] == reduced([1000] * 10, r, 1000)


def test_cifar10_mirror_says_whether_it_is_a_lossy_copy(mirror):
    """This environment's mirror (../shared/data) is a lossy JPEG copy, and says so in every description; a
    mirror built from torchvision's download (imbalance_lab.mirror) holds the original pixels and says nothing."""
    split = build_split(cifar10_lt(1))
    assert split.summary()["note"] == split.note
    if split.note:
        assert "LOSSY" in split.note and "JPEG" in split.note
        assert split.description.startswith("CIFAR-10 (lossy JPEG q75 copy — not the original pixels")
        # README: decoded train mean (0.4913, 0.4821, 0.4465)
        assert split.mean == pytest.approx([0.4913, 0.4821, 0.4465], abs=2e-4)
    else:
        assert split.description == f"CIFAR-10 (offline mirror {os.path.abspath(mirror)})"
        assert split.mean == pytest.approx([0.4914, 0.4822, 0.4465], abs=2e-4)  # the original pixels'



def test_subsets_are_nested_across_r_and_fixed_by_subset_seed(mirror):
    splits = {r: build_split(cifar10_lt(r)) for r in (10, 100, 200)}
    for c in range(10):
        kept = {r: set(s.indices["train"][s.train_y == c].tolist()) for r, s in splits.items()}
        assert kept[200] <= kept[100] <= kept[10]
    same = build_split(cifar10_lt(100))
    assert np.array_equal(same.indices["train"], splits[100].indices["train"])
    assert same.fingerprint == splits[100].fingerprint
    other = build_split(cifar10_lt(100, subset_seed=1))
    assert other.class_counts == splits[100].class_counts
    assert not np.array_equal(other.indices["train"], splits[100].indices["train"])
    assert other.fingerprint != splits[100].fingerprint


def test_subset_order_first_keeps_the_images_the_affinity_loss_reimplementation_keeps(mirror):
    """``data.subset_order=first``: the first n of each reduced class in the source's order, as the Keras
    reimplementation's ``inbalanced_mnist(n)`` keeps them (``np.cumsum(y == i) <= 6n`` / ``<= n`` for even i);
    the default draws them from a seeded permutation instead."""
    def source_filter(y, n):
        keep = np.zeros(len(y), dtype=bool)
        for i in range(10):
            current = y == i
            if i % 2 == 0:
                current &= np.cumsum(current) <= n
            keep |= current
        return np.flatnonzero(keep)

    split = build_split(mnist_even(100, subset_order="first"))
    train_y = np.load(os.path.join(mirror, "mnist_train.npz"))["labels"]
    test_y = np.load(os.path.join(mirror, "mnist_test.npz"))["labels"]
    assert np.array_equal(split.indices["train"], source_filter(train_y, 60))
    assert np.array_equal(split.indices["test"], source_filter(test_y, 10))
    seeded = build_split(mnist_even(100))
    assert seeded.class_counts == split.class_counts and seeded.fingerprint != split.fingerprint
    with pytest.raises(ConfigError, match=r"^data\.subset_order='last' is not allowed: one of seeded, first"):
        mnist_even(100, subset_order="last")


# ----------------------------------------------------------------------------- validation split
def test_validation_split_is_stratified_and_disjoint():
    plain = build_split(synthetic_lt(50, num_classes=10))
    split = build_split(synthetic_lt(50, num_classes=10, val_fraction=0.2))
    full = plain.class_counts["train"]  # 500 ... 10
    want_val = [max(round(0.2 * n), 1) for n in full]
    assert split.class_counts["val"] == want_val
    assert [t + v for t, v in zip(split.class_counts["train"], split.class_counts["val"])] == full
    assert not set(split.indices["train"].tolist()) & set(split.indices["val"].tolist())
    assert set(split.indices["train"].tolist()) | set(split.indices["val"].tolist()) == set(
        plain.indices["train"].tolist())
    assert split.val_x.shape == (sum(want_val), 3, 32, 32)
    assert split.fingerprint != plain.fingerprint


def test_config_errors_on_synthetic():
    with pytest.raises(ConfigError, match=r"data\.imbalance=600 .*at most 500"):
        build_split(synthetic_lt(600))
    with pytest.raises(ConfigError, match=r"data\.classes"):
        build_split(DataConfig(name="x", source="synthetic", classes=[0, 10]))


# ----------------------------------------------------------------------------- missing / corrupt mirror
@pytest.fixture
def no_download(monkeypatch):
    """torchvision fails at once, as it does without internet, but without trying the network."""
    import torchvision.datasets

    def refuse(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", refuse)


def test_missing_mirror_says_what_to_do(tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("IMBALANCE_LAB_DATA", str(tmp_path))
    with pytest.raises(DatasetUnavailable) as err:
        load_source("mnist", None, str(tmp_path / "downloads"), SyntheticConfig())
    message = str(err.value)
    assert str(tmp_path / "mnist_train.npz") in message and str(tmp_path / "mnist_test.npz") in message
    assert "IMBALANCE_LAB_DATA=<folder>" in message and "data.root=<folder>" in message
    assert "no network" in message and "\n" not in message


def test_unset_mirror_says_what_to_do(tmp_path, monkeypatch, no_download):
    monkeypatch.delenv("IMBALANCE_LAB_DATA", raising=False)
    with pytest.raises(DatasetUnavailable, match="IMBALANCE_LAB_DATA are unset"):
        build_split(mnist_even(10, download_dir=str(tmp_path)))


def _write_mnist_test(folder):
    np.savez(folder / "mnist_test.npz", images=np.zeros((2, 28, 28), np.uint8), labels=np.array([0, 1]))


@pytest.mark.parametrize("write, problem", [
    (lambda p: p.write_bytes(b"\x00garbage" * 100), "cannot be read"),
    (lambda p: p.write_bytes(b"PK\x03\x04" + b"\x00" * 50), "cannot be read"),
    (lambda p: np.savez(p, images=np.zeros((2, 28, 28), np.uint8)), "has no 'labels' array"),
    (lambda p: np.savez(p, images=np.zeros((2, 28, 28), np.uint8), labels=np.zeros(2, np.int32)), "int64"),
    (lambda p: np.savez(p, images=np.zeros((2, 28, 28), np.float32), labels=np.zeros(2, np.int64)), "uint8"),
    (lambda p: np.savez(p, images=np.zeros((2, 28, 28), np.uint8), labels=np.array([0, 10])), "labels span"),
    (lambda p: np.savez(p, images=np.zeros((3, 28, 28), np.uint8), labels=np.zeros(2, np.int64)), "3 images"),
    (lambda p: np.savez(p, images=np.zeros((2, 32, 32), np.uint8), labels=np.zeros(2, np.int64)), "expected"),
])
def test_corrupt_mirror_names_the_file(tmp_path, write, problem):
    write(tmp_path / "mnist_train.npz")
    _write_mnist_test(tmp_path)
    with pytest.raises(DatasetUnavailable) as err:
        load_source("mnist", str(tmp_path), None, SyntheticConfig())
    message = str(err.value)
    assert message.startswith(str(tmp_path / "mnist_train.npz")) and problem in message
    assert "verify.py" in message and "\n" not in message


# ----------------------------------------------------------------------------- encoded mirror and its cache
def _encoded_mirror(folder, images, labels, fmt="PNG"):
    blobs = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format=fmt)
        blobs.append(np.frombuffer(buffer.getvalue(), np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    for split in ("train", "test"):
        np.savez(folder / f"cifar10_{split}.npz", encoded=np.concatenate(blobs), offsets=offsets, labels=labels,
                 note="LOSSY test copy")


def test_encoded_mirror_is_decoded_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(20, dtype=np.int64) % 10
    _encoded_mirror(tmp_path, images, labels)
    raw = load_source("cifar10", str(tmp_path), None, SyntheticConfig())
    assert np.array_equal(raw.train_images, images) and np.array_equal(raw.test_labels, labels)
    assert raw.note == "LOSSY test copy" and "lossy copy" in raw.description
    assert list((tmp_path / "cache" / "imbalance_lab" / "decoded").glob("*.npy"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(Image, "open", no_decoding)
    again = load_source("cifar10", str(tmp_path), None, SyntheticConfig())
    assert np.array_equal(again.train_images, images)


def test_undecodable_image_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    offsets = np.array([0, 10], np.int64)
    for split in ("train", "test"):
        np.savez(tmp_path / f"cifar10_{split}.npz", encoded=np.full(10, 7, np.uint8), offsets=offsets,
                 labels=np.zeros(1, np.int64))
    with pytest.raises(DatasetUnavailable, match=r"cifar10_train\.npz: image 0 cannot be decoded"):
        load_source("cifar10", str(tmp_path), None, SyntheticConfig())


def test_a_decode_cache_overwritten_with_other_bytes_is_decoded_again(tmp_path, monkeypatch, caplog):
    """Other bytes of the same size in the cache (a bad disk, a clash, a hand edit): the checksum stored
    beside it no longer matches, so the images are decoded again — never trained on silently."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    _encoded_mirror(tmp_path, images, np.arange(20, dtype=np.int64) % 10)
    load_source("cifar10", str(tmp_path), None, SyntheticConfig())
    (cache,) = (tmp_path / "cache" / "imbalance_lab" / "decoded").glob("*.npy")
    header_size = len(cache.read_bytes()) - images.nbytes
    cache.write_bytes(cache.read_bytes()[:header_size] + rng.integers(0, 256, images.nbytes, np.uint8).tobytes())
    again = load_source("cifar10", str(tmp_path), None, SyntheticConfig())
    assert np.array_equal(again.train_images, images)
    assert "does not match its checksum" in caplog.text


def test_the_pixels_trained_on_are_identified_by_their_hash():
    def split(seed):
        return build_split(DataConfig(name="synthetic", source="synthetic", profile="exp", imbalance=10,
                                      synthetic=SyntheticConfig(num_classes=3, seed=seed, image_size=16)))

    same, other = [split(0), split(0)], split(1)  # the generator's seed: other pixels
    assert len(same[0].pixels_sha256) == 64 and same[0].summary()["pixels_sha256"] == same[0].pixels_sha256
    assert same[0].pixels_sha256 == same[1].pixels_sha256 != other.pixels_sha256
