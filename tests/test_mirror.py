"""``python -m imbalance_lab.mirror``: torchvision's on-disk datasets become mirror files, checksummed, that the
product reads. The archives are small ones written here in torchvision's formats (no network in CI)."""

import os
import pickle
import struct

import numpy as np
from torchvision.datasets import cifar

from imbalance_lab import mirror
from imbalance_lab.data.sources import read_mirror


def idx(path, array: np.ndarray) -> None:
    """An IDX file (MNIST's format): magic 0, 0, 8 (unsigned bytes), the number of dimensions, then each
    dimension as a big-endian int32, then the bytes."""
    path.write_bytes(struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
                     + array.astype(np.uint8).tobytes())


def mnist_files(root, rng) -> dict:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    out = {}
    for split, prefix, n in (("train", "train", 30), ("test", "t10k", 12)):
        images, labels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)
        idx(raw / f"{prefix}-images-idx3-ubyte", images)
        idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        out[split] = (images, labels)
    return out


def cifar10_files(root, rng) -> dict:
    """CIFAR-10's python batches: five training batches, a test batch and the meta file."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": 4 for i in range(1, 6)} | {"test_batch": 6}
    out = {"train": [], "test": []}
    for name, n in batches.items():
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        data = images.transpose(0, 3, 1, 2).reshape(n, 3072)  # the batches hold rows of R, G, B planes
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": labels}))
        out["test" if name == "test_batch" else "train"].append((images, np.array(labels)))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": ["c"] * 10}))
    return {split: tuple(np.concatenate(parts) for parts in zip(*v)) for split, v in out.items()}


def test_torchvision_files_become_checksummed_mirror_files_the_product_reads(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    downloads, folder = tmp_path / "downloads", tmp_path / "mirror"
    expected = {"mnist": mnist_files(downloads, rng), "cifar10": cifar10_files(downloads, rng)}
    # torchvision checks CIFAR files against the official MD5 sums, which files written here cannot match
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))

    assert mirror.main([str(folder), "--datasets", "mnist,cifar10", "--download-dir", str(downloads)]) == 0
    assert f"mirror ready: IMBALANCE_LAB_DATA={folder}" in capsys.readouterr().out
    for name, splits in expected.items():
        for split, (images, labels) in splits.items():
            with np.load(folder / f"{name}_{split}.npz", allow_pickle=False) as npz:
                assert set(npz.files) == {"images", "labels"} and npz["labels"].dtype == np.int64
                assert np.array_equal(npz["images"], images) and np.array_equal(npz["labels"], labels)
        raw = read_mirror(name, str(folder), [str(p) for p in mirror.files(folder, name)])
        assert raw.note == "" and raw.description.endswith(f"(offline mirror {os.path.abspath(folder)})")

    sums = (folder / mirror.CHECKSUMS).read_text().splitlines()
    assert sorted(line.split()[1] for line in sums) == sorted(p.name for p in folder.glob("*.npz"))
    assert all(mirror.sha256(folder / name) == digest for digest, name in (line.split() for line in sums))
    assert mirror.complete(folder, ["mnist", "cifar10"]) and not mirror.complete(folder, ["cifar100"])
    damaged = folder / "mnist_test.npz"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert not mirror.complete(folder, ["mnist"])  # what the test suite's cached mirror is checked with
