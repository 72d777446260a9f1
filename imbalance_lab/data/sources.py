"""Dataset sources as raw uint8 arrays: the offline mirror, torchvision downloads, generated data, and (in
``data/image_folder.py``) a folder of your own images."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from imbalance_lab.atomic import atomic_write
from imbalance_lab.schema import SOURCES, DataConfig, SyntheticConfig, one_of

ENV_ROOT = "IMBALANCE_LAB_DATA"
FORMAT_DOC = "the Datasets section of imbalance_lab's README.md"

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck",
    "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel",
    "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
]  # the fine labels, in label order (alphabetical), as in the dataset's meta file

log = logging.getLogger(__name__)


class DatasetUnavailable(RuntimeError):
    """The dataset can be neither read from the offline mirror nor downloaded; the message says how to fix it."""


@dataclass
class RawDataset:
    """A source's full train and test splits: images uint8 N×H×W×C (C=1 for MNIST), labels int64.

    Decoded mirror images are read-only memory maps of the decode cache: index them, do not write.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]
    note: str = ""  # provenance the user must see (e.g. a lossy copy); '' if none
    description: str = ""  # e.g. "MNIST (offline mirror /data)"
    val_images: np.ndarray | None = None  # a validation part of the source's own (an image folder's val/)
    val_labels: np.ndarray | None = None
    identity: str = ""  # what decides the pixels besides the source's name (an image folder's content), if any
    details: dict = field(default_factory=dict)  # the source's own facts, recorded with the run's data summary


class _Real(NamedTuple):
    title: str
    class_names: list[str]
    shape: tuple[int, int, int]  # H, W, C
    torchvision_name: str


REAL = {
    "mnist": _Real("MNIST", [str(d) for d in range(10)], (28, 28, 1), "MNIST"),
    "cifar10": _Real("CIFAR-10", CIFAR10_CLASSES, (32, 32, 3), "CIFAR10"),
    "cifar100": _Real("CIFAR-100", CIFAR100_CLASSES, (32, 32, 3), "CIFAR100"),
}


def load_data(cfg: DataConfig) -> RawDataset:
    """The source ``cfg`` names: an image folder (``data.path``), or a built-in dataset (``load_source``)."""
    if cfg.source == "image_folder":
        from imbalance_lab.data.image_folder import read_image_folder  # it builds on this module

        return read_image_folder(cfg)
    return load_source(cfg.source, cfg.root, cfg.download_dir, cfg.synthetic)


def load_source(name: str, root: str | None, download_dir: str | None,
                synthetic: SyntheticConfig) -> RawDataset:
    """The offline mirror (``root``, else $IMBALANCE_LAB_DATA) if it holds the dataset, else torchvision."""
    one_of("data.source", name, [s for s in SOURCES if s != "image_folder"])
    if name == "synthetic":
        return make_synthetic(synthetic)
    root = root or os.environ.get(ENV_ROOT) or None
    paths = [os.path.join(root, f"{name}_{split}.npz") for split in ("train", "test")] if root else []
    if paths and all(os.path.isfile(p) for p in paths):
        return read_mirror(name, root, paths)
    try:
        return download(name, download_dir)
    except Exception as exc:  # whatever failed (network, disk, checksum), the remedy is the same
        raise DatasetUnavailable(_advice(name, paths, exc)) from exc


def _advice(name: str, paths: list[str], exc: Exception) -> str:
    if paths:
        missing = [p for p in paths if not os.path.isfile(p)]
        where = f"no offline mirror found (looked for {', '.join(paths)}; missing: {', '.join(missing)})"
    else:
        where = f"no offline mirror given (data.root and {ENV_ROOT} are unset)"
    reason = (str(exc).strip().splitlines() or [""])[0][:200] or type(exc).__name__
    return (f"{name}: {where} and torchvision could not download it ({reason}). Put {name}_train.npz and "
            f"{name}_test.npz (format: see {FORMAT_DOC}) in a folder and set {ENV_ROOT}=<folder> or "
            f"data.root=<folder>, or run where the internet is reachable.")


def cache_home() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "imbalance_lab")


# ----------------------------------------------------------------------------- torchvision
def download(name: str, download_dir: str | None) -> RawDataset:
    import torchvision.datasets  # imported late: slow, and only needed without a mirror

    real = REAL[name]
    folder = download_dir or os.path.join(cache_home(), "torchvision")
    dataset_class = getattr(torchvision.datasets, real.torchvision_name)
    arrays = []
    for train in (True, False):
        ds = dataset_class(root=folder, train=train, download=True)
        images = np.asarray(ds.data, dtype=np.uint8)
        arrays += [images.reshape(*images.shape[:3], -1), np.asarray(ds.targets, dtype=np.int64)]
    return RawDataset(*arrays, class_names=list(real.class_names),
                      description=f"{real.title} (torchvision download, {folder})")


# ----------------------------------------------------------------------------- offline mirror
def read_mirror(name: str, root: str, paths: list[str]) -> RawDataset:
    """Read and validate ``<root>/<name>_{train,test}.npz`` (format: README.md, "Datasets")."""
    real = REAL[name]
    (train_x, train_y, train_note), (test_x, test_y, test_note) = (_read_npz(p, real) for p in paths)
    note = " ".join(dict.fromkeys(n for n in (train_note, test_note) if n))
    where = f"offline mirror {os.path.abspath(root)}"
    lossy = _lossy_label(note)
    description = f"{real.title} ({lossy} — not the original pixels; {where})" if lossy else f"{real.title} ({where})"
    return RawDataset(train_x, train_y, test_x, test_y, list(real.class_names), note, description)


def _lossy_label(note: str) -> str:
    """'lossy JPEG q75 copy' for a note that flags a lossy copy; '' when it does not."""
    if "lossy" not in note.lower():
        return ""
    quality = re.search(r"JPEG\W*quality\W*(\d+)", note, re.IGNORECASE)
    return f"lossy JPEG q{quality.group(1)} copy" if quality else "lossy copy"


def _bad(path: str, problem: str) -> DatasetUnavailable:
    return DatasetUnavailable(
        f"{path}: {problem}. The file is damaged or not in the mirror format ({FORMAT_DOC}); copy or download "
        f"it again (a mirror that ships a checksum script, like verify.py, can re-check the folder).")


# Errors that mean "this file cannot be read": not a zip, truncated, bad CRC, not an npy member, pickled data.
_UNREADABLE = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def _read_npz(path: str, real: _Real) -> tuple[np.ndarray, np.ndarray, str]:
    """(images N×H×W×C uint8, labels int64, note) of one mirror file, validated."""
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise _bad(path, "is a single .npy array, not an .npz archive")
        with npz:
            labels = _array(npz, path, "labels", np.int64, 1)
            if labels.size and not (0 <= labels.min() and labels.max() < len(real.class_names)):
                raise _bad(path, f"labels span {labels.min()}..{labels.max()}, expected 0..{len(real.class_names) - 1}")
            if "images" in npz.files:
                images = _array(npz, path, "images", np.uint8, None)
                if images.ndim == 3:
                    images = images[..., None]
            elif {"encoded", "offsets"} <= set(npz.files):
                images = _decoded(npz, path, real)
            else:
                raise _bad(path, f"has neither 'images' nor 'encoded' + 'offsets' (arrays: {', '.join(npz.files)})")
            note = str(npz["note"]) if "note" in npz.files else ""
    except _UNREADABLE as exc:
        raise _bad(path, f"cannot be read as an .npz archive ({type(exc).__name__}: {exc})") from exc
    if images.shape[1:] != real.shape:
        raise _bad(path, f"images have shape {images.shape}, expected (N, {', '.join(map(str, real.shape))})")
    if len(images) != len(labels):
        raise _bad(path, f"{len(images)} images but {len(labels)} labels")
    return images, labels, note


def _array(npz, path: str, key: str, dtype, ndim: int | None) -> np.ndarray:
    if key not in npz.files:
        raise _bad(path, f"has no '{key}' array")
    array = npz[key]
    if array.dtype != dtype or (ndim is not None and array.ndim != ndim):
        want = f"{np.dtype(dtype).name}" + (f" with {ndim} dimension(s)" if ndim else "")
        raise _bad(path, f"'{key}' is {array.dtype.name} with shape {array.shape}, expected {want}")
    return array


def _decoded(npz, path: str, real: _Real) -> np.ndarray:
    """Decode the ``encoded`` PNG/JPEG images, through a cache keyed by the file's sha256 (decoding takes ~10 s)."""
    offsets = _array(npz, path, "offsets", np.int64, 1)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    cache = os.path.join(cache_home(), "decoded", f"{digest.hexdigest()}.npy")
    try:
        images = np.load(cache, allow_pickle=False)
        with open(cache + ".sha256") as f:
            stored = f.read().strip()
        if images.shape == (len(offsets) - 1, *real.shape) and images.dtype == np.uint8 \
                and pixels_sha256(images) == stored:
            return images
        log.warning("decode cache %s does not match its checksum: decoding %s again", cache, path)
    except _UNREADABLE:
        pass  # no cache yet, or a damaged or unverifiable one: decode again
    encoded = _array(npz, path, "encoded", np.uint8, 1)
    if len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(encoded) or np.any(np.diff(offsets) < 0):
        raise _bad(path, "'offsets' do not cut 'encoded' into consecutive images")
    images = _decode_all(encoded.tobytes(), offsets, path, real)
    _save_atomic(cache, images)
    return images


def pixels_sha256(*arrays: np.ndarray) -> str:
    """sha256 of the arrays' shapes, dtypes and bytes: what identifies the pixels themselves."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def _decode_all(data: bytes, offsets: np.ndarray, path: str, real: _Real) -> np.ndarray:
    from PIL import Image

    height, width, channels = real.shape
    images = np.empty((len(offsets) - 1, height, width, channels), np.uint8)
    mode = "L" if channels == 1 else "RGB"
    for i, (start, end) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist())):
        try:
            with Image.open(io.BytesIO(data[start:end])) as image:
                pixels = np.asarray(image.convert(mode))
        except (OSError, ValueError, SyntaxError) as exc:  # Pillow reports a broken header as SyntaxError
            raise _bad(path, f"image {i} cannot be decoded ({exc})") from exc
        if pixels.shape[:2] != (height, width):
            raise _bad(path, f"image {i} is {pixels.shape[1]}x{pixels.shape[0]}, expected {width}x{height}")
        images[i] = pixels.reshape(height, width, channels)
    return images


def _save_atomic(path: str, array: np.ndarray) -> None:
    """Write the decode cache atomically, so a reader never sees a half-written one, and its checksum beside
    it (written after it: a cache without a checksum is decoded again)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, lambda f: np.save(f, array))
        atomic_write(path + ".sha256", lambda f: f.write(pixels_sha256(array).encode()))
    except OSError:
        pass  # an unwritable cache only costs the decode time next time


# ----------------------------------------------------------------------------- synthetic
NOISE_STD = 25.0  # grey levels
NOISE_BANK = 1 << 20


def make_synthetic(cfg: SyntheticConfig) -> RawDataset:
    """Per class a smooth random template (a 4×4 pattern upsampled); images = contrast · template + noise."""
    streams = np.random.SeedSequence(cfg.seed).spawn(3)
    templates = _templates(np.random.default_rng(streams[0]), cfg)
    train_x, train_y = _draw(np.random.default_rng(streams[1]), templates, cfg.train_per_class)
    test_x, test_y = _draw(np.random.default_rng(streams[2]), templates, cfg.test_per_class)
    size = cfg.image_size
    return RawDataset(train_x, train_y, test_x, test_y, [f"class_{k}" for k in range(cfg.num_classes)],
                      description=f"synthetic ({cfg.num_classes} classes, {size}x{size}x{cfg.channels}, "
                                  f"seed {cfg.seed})")


def _templates(rng: np.random.Generator, cfg: SyntheticConfig) -> np.ndarray:
    """(K, S, S, C) float32 grey levels centred on 0: bilinear upsampling of random 4×4 patterns."""
    grid = min(4, cfg.image_size)
    low = rng.random((cfg.num_classes, grid, grid, cfg.channels), dtype=np.float32)
    pos = np.linspace(0, grid - 1, cfg.image_size)
    lo = np.clip(np.floor(pos).astype(int), 0, max(grid - 2, 0))
    frac = (pos - lo).astype(np.float32)
    up = np.zeros((cfg.image_size, grid), np.float32)
    rows = np.arange(cfg.image_size)
    up[rows, lo] += 1 - frac
    up[rows, np.minimum(lo + 1, grid - 1)] += frac
    return np.einsum("ha,kabc,wb->khwc", up, low, up) * 255 - 128


def _draw(rng: np.random.Generator, templates: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.permutation(np.repeat(np.arange(len(templates), dtype=np.int64), per_class))
    contrast = rng.uniform(0.6, 1.0, len(labels)).astype(np.float32)
    size = templates[0].size
    # Fresh gaussian draws for 150M pixels take seconds; windows at random offsets of one gaussian bank
    # are as good a noise for this purpose and take a fraction of that.
    bank = rng.standard_normal(NOISE_BANK + size, dtype=np.float32) * NOISE_STD
    windows = np.lib.stride_tricks.sliding_window_view(bank, size)
    images = np.empty((len(labels), *templates.shape[1:]), np.uint8)
    chunk = max(1, (1 << 22) // size)  # bounds the float temporaries to ~16 MB
    for start in range(0, len(labels), chunk):
        part = slice(start, start + chunk)
        x = templates[labels[part]] * contrast[part, None, None, None]
        x += windows[rng.integers(0, len(windows), len(x))].reshape(x.shape)
        x += 128
        np.clip(x, 0, 255, out=x)
        images[part] = x
    return images, labels
