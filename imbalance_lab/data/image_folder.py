"""Your own images (``data=image_folder``): a folder in torchvision's ``ImageFolder`` layout as a :class:`RawDataset`.

Layout (``schema.image_folder_parts``): ``<path>/<class>/<image>``, of which a seeded stratified split holds out
``data.test_fraction`` (0.2) of each class for test; or ``<path>/train/<class>/<image>`` with ``test/`` (without
it, the test part is split off ``train/`` the same way) and optionally ``val/`` beside it, which must have the
same class folders. Class names are the class folders' names, sorted (label k is the k-th). Images are the files
with torchvision's image extensions anywhere under a class folder, hidden ones aside. The folder's own class
sizes are kept (its natural imbalance); ``data.profile`` cuts them further in ``split.build_split``.

Every image is decoded once (Pillow, EXIF orientation applied), its shorter side resized to ``data.image_size``
(bicubic) and centre-cropped to a square, and kept as uint8: a folder of greyscale images gives 1 channel, one
colour image among them makes them all RGB. The decoded images are cached as
``~/.cache/imbalance_lab/image_folder/<key>.npz``, the key a sha256 of the image files' paths, sizes and
modification times and of the image size, with the sha256 of its arrays beside it (``<key>.npz.sha256``)
checked at every load: a changed folder has another key and is decoded again; a damaged cache is decoded again,
with a warning.

An image that cannot be decoded stops the run with one line naming it, unless ``data.skip_unreadable=true``:
then it is left out, named in the run's dataset note and counted in its data summary (``details``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import NamedTuple

import numpy as np

from imbalance_lab.atomic import atomic_write
from imbalance_lab.data.profiles import held_out_count
from imbalance_lab.data.sources import _UNREADABLE, RawDataset, cache_home, pixels_sha256
from imbalance_lab.schema import ConfigError, DataConfig, check, image_folder_parts, sub_folders

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
DEFAULT_TEST_FRACTION = 0.2
CACHE_FORMAT = 1  # part of the cache key: a new format never reads an old cache
_TEST_STREAM = 2  # the stratified test split's permutations (split.py's subsets use streams 0 and 1)
SHOWN = 100  # unreadable files named in the data summary


class Entry(NamedTuple):
    part: str  # train, test, val; 'all' for a folder without train/
    label: int
    file: str  # relative to the folder, '/'-separated


def read_image_folder(cfg: DataConfig) -> RawDataset:
    """The folder ``data.path`` as train / test (/ val) arrays N×S×S×C uint8 with their labels; raises
    :class:`ConfigError` (one line) for a folder it cannot use."""
    root = os.path.abspath(os.path.expanduser(cfg.path))
    parts = image_folder_parts(root)
    classes = _classes(cfg, root, parts)
    entries = _scan(cfg, root, parts, classes)
    images, readable, reasons, cache = decoded(root, entries, cfg.image_size)
    skipped = [e.file for e, ok in zip(entries, readable) if not ok]
    if skipped and not cfg.skip_unreadable:
        first = next(i for i, ok in enumerate(readable) if not ok)
        more = f"; {len(skipped) - 1} more cannot either" if len(skipped) > 1 else ""
        raise _refused(cfg, f"a folder whose images can all be decoded ({entries[first].file} cannot: "
                            f"{reasons[first]}{more}); fix or remove such files, or set data.skip_unreadable=true "
                            "to leave them out")
    position = np.cumsum(readable) - 1  # entry -> row of images
    rows: dict[str, list[int]] = {}
    for i, (entry, ok) in enumerate(zip(entries, readable)):
        if ok:
            rows.setdefault(entry.part, []).append(i)
    for part in parts:  # every class folder of every part gives at least one image
        have = np.bincount([entries[i].label for i in rows.get(part, [])], minlength=len(classes))
        for label in np.flatnonzero(have == 0):
            raise _refused(cfg, f"a folder whose class folders each hold a readable image "
                                f"({_where(part, classes[label])} has none: its "
                                f"{_files_in(entries, part, label)} image file(s) cannot be decoded)")

    def arrays(index: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return images[position[index]], np.array([entries[i].label for i in index], np.int64)

    pool = "all" if "all" in parts else "train"
    fraction = None
    if "test" in parts:
        train_index, test_index = rows["train"], rows["test"]
    else:
        fraction = DEFAULT_TEST_FRACTION if cfg.test_fraction is None else cfg.test_fraction
        train_index, test_index = _stratified(cfg, fraction, rows[pool], entries, classes)
    val = arrays(rows["val"]) if "val" in parts else (None, None)
    channels = images.shape[-1]
    layout = ("its own " + ", ".join(f"{p}/" for p in parts) if fraction is None else
              f"{'train/' if pool == 'train' else 'one folder'}, test split off by data.test_fraction={fraction} per "
              f"class (seed data.subset_seed={cfg.subset_seed})")
    note = (f"{len(skipped)} unreadable image(s) left out (data.skip_unreadable=true): "
            f"{', '.join(skipped[:5])}{', …' if len(skipped) > 5 else ''}") if skipped else ""
    identity = {"cache": os.path.basename(cache), "test_fraction": fraction,
                "seed": cfg.subset_seed if fraction is not None else None, "skipped": skipped}
    size, colour = cfg.image_size, "greyscale" if channels == 1 else "RGB"
    return RawDataset(
        *arrays(train_index), *arrays(test_index), class_names=list(classes), note=note,
        description=f"image folder {root} ({int(readable.sum())} images, {len(classes)} classes, {size}x{size} "
                    f"{colour})",
        val_images=val[0], val_labels=val[1],
        identity=hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16],
        details={"folder": root, "layout": layout, "image_size": size, "channels": channels,
                 "images": int(readable.sum()), "skipped_unreadable": len(skipped),
                 "skipped_files": skipped[:SHOWN], "cache": cache},
    )


def _refused(cfg: DataConfig, allowed: str) -> ConfigError:
    return ConfigError("data.path", cfg.path, allowed)


def _where(part: str, name: str) -> str:
    return name if part == "all" else f"{part}/{name}"


def _files_in(entries: list[Entry], part: str, label: int) -> int:
    return sum(e.part == part and e.label == label for e in entries)


def _classes(cfg: DataConfig, root: str, parts: dict[str, str]) -> list[str]:
    """The class folders' names (those of train/ or of the folder), checked against the layout's rules."""
    if "all" not in parts:
        beside = [name for name in sub_folders(root) if name not in parts]
        check(not beside, "data.path", cfg.path, f"a folder with train/, test/ and val/ and nothing else beside them "
                                                 f"(found {', '.join(f'{n}/' for n in beside)})")
        check("test" not in parts or cfg.test_fraction is None, "data.test_fraction", cfg.test_fraction,
              f"null when the folder has its own test/ ({root})")
        check("val" not in parts or cfg.val_fraction == 0, "data.val_fraction", cfg.val_fraction,
              f"0 when the folder has its own val/ ({root})")
    classes = sub_folders(parts.get("train", parts.get("all")))
    for part, folder in parts.items():
        if part in ("train", "all"):
            continue
        own = sub_folders(folder)
        if own != classes:
            only_train = ", ".join(sorted(set(classes) - set(own))) or "none"
            only_part = ", ".join(sorted(set(own) - set(classes))) or "none"
            raise _refused(cfg, f"a folder whose train/ and {part}/ have the same class folders (only in train/: "
                                f"{only_train}; only in {part}/: {only_part})")
    where = "train/" if "train" in parts else "the folder"
    check(len(classes) >= 2, "data.path", cfg.path,
          f"a folder of at least two class folders, <class>/<image> ({where} has {len(classes)}: "
          f"{', '.join(classes) or 'none'})")
    return classes


def _scan(cfg: DataConfig, root: str, parts: dict[str, str], classes: list[str]) -> list[Entry]:
    """Every image file of every part and class, in order (part, class, path), sub-folders included."""
    entries = []
    for part, folder in parts.items():
        for label, name in enumerate(classes):
            found = []
            for dirpath, dirnames, filenames in os.walk(os.path.join(folder, name), followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found += [os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")
                          for f in filenames if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
            check(bool(found), "data.path", cfg.path,
                  f"a folder whose class folders each hold images ({_where(part, name)} has no file named "
                  f"*{', *'.join(IMAGE_EXTENSIONS)})")
            entries += [Entry(part, label, f) for f in sorted(found)]
    return entries


def _stratified(cfg: DataConfig, fraction: float, pool: list[int], entries: list[Entry],
                classes: list[str]) -> tuple[list[int], list[int]]:
    """(train, test) entries of the pool: per class, a seeded choice of held_out_count(fraction, n) for test."""
    labels = np.array([entries[i].label for i in pool])
    train, test = [], []
    for label, name in enumerate(classes):
        members = np.flatnonzero(labels == label)
        check(len(members) >= 2, "data.test_fraction", fraction,
              f"a split of classes of at least 2 images ('{name}' has {len(members)}): add images, or give the "
              "folder train/ and test/ sub-folders")
        order = members[np.random.default_rng([cfg.subset_seed, _TEST_STREAM, label]).permutation(len(members))]
        n_test = held_out_count(fraction, len(members))
        test += order[:n_test].tolist()
        train += order[n_test:].tolist()
    return [pool[i] for i in sorted(train)], [pool[i] for i in sorted(test)]


# ----------------------------------------------------------------------------- decoding and its cache
def cache_key(root: str, entries: list[Entry], image_size: int) -> str:
    """sha256 of the image files' paths, sizes and modification times, and of the image size."""
    digest = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, "image_size": image_size}).encode())
    for entry in entries:
        stat = os.stat(os.path.join(root, entry.file))
        digest.update(f"{entry.file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def decoded(root: str, entries: list[Entry], image_size: int) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """(images of the readable entries N×S×S×C uint8, readable mask per entry, reason per entry ('' if readable),
    cache path): from the cache when it is valid, else decoded and cached."""
    files = np.array([e.file for e in entries], dtype=str)
    path = os.path.join(cache_home(), "image_folder", f"{cache_key(root, entries, image_size)}.npz")
    cached = _read_cache(path, files, image_size)
    if cached is not None:
        return (*cached, path)
    log.info("decoding %d images of %s at %dx%d (once: cached in %s)", len(entries), root, image_size, image_size,
             path)
    images, readable, reasons = decode_all([os.path.join(root, e.file) for e in entries], image_size)
    _write_cache(path, {"images": images, "readable": readable, "reasons": np.array(reasons, dtype=str),
                        "files": files})
    return images, readable, reasons, path


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    return pixels_sha256(*(arrays[k] for k in ("images", "readable", "reasons", "files")))


def _read_cache(path: str, files: np.ndarray, image_size: int):
    """(images, readable, reasons) of a valid cache; None when there is none or it does not check out."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("images", "readable", "reasons", "files")}
        with open(path + ".sha256") as f:
            stored = f.read().strip()
        images, readable = arrays["images"], arrays["readable"]
        if (images.dtype == np.uint8 and readable.dtype == bool and np.array_equal(arrays["files"], files)
                and images.ndim == 4 and images.shape[1:3] == (image_size, image_size) and images.shape[3] in (1, 3)
                and len(images) == readable.sum() and len(arrays["reasons"]) == len(files)
                and _checksum(arrays) == stored):
            return images, readable, arrays["reasons"].tolist()
    except (*_UNREADABLE, KeyError):
        pass
    log.warning("image cache %s does not match its checksum (damaged): decoding the folder again", path)
    return None


def _write_cache(path: str, arrays: dict[str, np.ndarray]) -> None:
    """The cache, then its checksum (a cache without one is decoded again); an unwritable cache only costs the
    decoding next time."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, lambda f: np.savez(f, **arrays))
        atomic_write(path + ".sha256", lambda f: f.write(_checksum(arrays).encode()))
    except OSError as exc:
        log.warning("could not write the image cache %s (%s): the folder is decoded again next time", path, exc)


def decode_all(paths: list[str], size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode, orient, resize and centre-crop each image; 1 channel if every readable one is greyscale."""
    from PIL import Image

    failures = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)  # Pillow's ways to fail
    out = np.empty((len(paths), size, size, 3), np.uint8)
    readable, reasons, grey = np.zeros(len(paths), bool), [""] * len(paths), []
    for i, path in enumerate(paths):
        try:
            pixels, is_grey = decode_one(path, size)
        except failures as exc:
            reasons[i] = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
            continue
        out[i] = pixels[..., None] if is_grey else pixels
        readable[i] = True
        grey.append(is_grey)
    images = out if readable.all() else out[readable]
    if grey and all(grey):
        images = np.ascontiguousarray(images[..., :1])
    return images, readable, reasons


def decode_one(path: str, size: int) -> tuple[np.ndarray, bool]:
    """(pixels S×S (greyscale) or S×S×3, greyscale?) of one image file."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image.load()
        try:
            image = ImageOps.exif_transpose(image)
        except Exception as exc:  # noqa: BLE001 - a broken EXIF block: the pixels are still good
            log.debug("%s: EXIF orientation not applied (%s)", path, exc)
        grey = image.mode in GREY_MODES
        image = ImageOps.fit(image.convert("L" if grey else "RGB"), (size, size), Image.Resampling.BICUBIC)
        return np.asarray(image, dtype=np.uint8), grey
