"""Build an offline dataset mirror from torchvision's own downloads:

    python -m imbalance_lab.mirror <folder> [--datasets mnist,cifar10,cifar100] [--download-dir <dir>]

For each dataset, torchvision downloads its files (checking their published MD5 sums) into ``--download-dir``
(default: ~/.cache/imbalance_lab/torchvision; files already there are reused), and the train and test splits
are written as ``<folder>/<dataset>_{train,test}.npz`` in the mirror format the product reads (README.md,
"Datasets": ``images`` uint8 (N,H,W) or (N,H,W,3), ``labels`` int64 — the original pixels, no note). Then
``<folder>/SHA256SUMS`` lists every mirror file's SHA-256 (``sha256sum -c SHA256SUMS`` checks the folder) and
each file is read back through the product's own reader. Point runs at the folder with
``IMBALANCE_LAB_DATA=<folder>`` or ``data.root=<folder>``; the test suite builds one in the user cache this way
when ``IMBALANCE_LAB_DATA`` is unset.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from datetime import date
from pathlib import Path

from .data.sources import REAL, DatasetUnavailable, cache_home, download, read_mirror
from .runfolder import save_npz_atomic, write_text_atomic

SPLITS = ("train", "test")
CHECKSUMS = "SHA256SUMS"


def files(folder: Path, name: str) -> list[Path]:
    return [Path(folder) / f"{name}_{split}.npz" for split in SPLITS]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build(folder: Path, datasets: list[str], download_dir: str | None = None, log=print) -> list[Path]:
    """Write the mirror files of ``datasets`` into ``folder`` (each atomically) and its SHA256SUMS; returns the
    files written. Raises ``DatasetUnavailable`` (with what to do) when torchvision cannot get a dataset."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in datasets:
        if name not in REAL:
            raise SystemExit(f"error: --datasets={name} is not allowed: one of {', '.join(REAL)}")
        log(f"{name}: torchvision download into {download_dir or Path(cache_home()) / 'torchvision'}")
        try:
            raw = download(name, download_dir)
        except Exception as exc:  # whatever failed (network, disk, checksum): one line, what to do
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise DatasetUnavailable(f"{name}: torchvision could not download it ({reason}); run "
                                     "where the internet is reachable, or copy its mirror files "
                                     f"({name}_train.npz, {name}_test.npz) into {folder}") from exc
        for path, images, labels in zip(files(folder, name), (raw.train_images, raw.test_images),
                                        (raw.train_labels, raw.test_labels)):
            save_npz_atomic(path, images=images[..., 0] if images.shape[-1] == 1 else images, labels=labels)
            written.append(path)
        check = read_mirror(name, str(folder), [str(p) for p in files(folder, name)])  # the product's reader
        log(f"{name}: {len(check.train_labels)} train, {len(check.test_labels)} test images -> "
            f"{', '.join(p.name for p in files(folder, name))}")
    present = sorted(p for p in folder.glob("*.npz"))
    write_text_atomic(folder / CHECKSUMS, "".join(f"{sha256(p)}  {p.name}\n" for p in present))
    write_text_atomic(folder / "README.txt", f"Offline mirror built by `python -m imbalance_lab.mirror` from "
                      f"torchvision's downloads ({date.today().isoformat()}): original pixels. Check it with "
                      f"`sha256sum -c {CHECKSUMS}`.\n")
    return written


def complete(folder: Path, datasets: list[str]) -> bool:
    """Whether ``folder`` holds every mirror file of ``datasets``, each matching its SHA256SUMS line."""
    sums = Path(folder) / CHECKSUMS
    if not sums.is_file():
        return False
    listed = dict(reversed(line.split(None, 1)) for line in sums.read_text().splitlines() if line.strip())
    paths = [p for name in datasets for p in files(folder, name)]
    return all(p.is_file() and listed.get(p.name) == sha256(p) for p in paths)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imbalance_lab.mirror", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where the mirror files go")
    parser.add_argument("--datasets", default=",".join(REAL), help=f"comma-separated, of {', '.join(REAL)}")
    parser.add_argument("--download-dir", default=None, help="torchvision's download folder")
    args = parser.parse_args(argv)
    try:
        build(args.folder, args.datasets.split(","), args.download_dir)
    except DatasetUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"mirror ready: IMBALANCE_LAB_DATA={args.folder.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
