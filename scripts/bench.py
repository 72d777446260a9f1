"""Training throughput of imbalance_lab's trainer against the plain PyTorch loop a user would write.

    python scripts/bench.py                                   # every model, this machine's device
    python scripts/bench.py --models cnn_mnist,cnn_cifar:640 --stacks 1,8,32 --stacking loop,vmap --out bench/h200

For each model (``name:batch`` gives it its own batch size): training images/s after a warm-up epoch, peak
device memory, model-FLOP utilisation (FLOPs per training image from
``torch.utils.flop_counter.FlopCounterMode`` x images/s / the device's dense bf16 peak, where the GPU is in
the table below), and — in the same process, on the same data — the plain loop: a torchvision-style
``Dataset`` with per-sample ``ToTensor``/``Normalize``, a ``DataLoader``, float32, ``torch.optim.Adam``.
Both are timed the same way: one warm-up epoch, then one epoch from a device synchronisation to a device
synchronisation (ours: the trainer's own epoch time, which is taken so). A stack of K trains K models at once
(``fit_stack``) with each engine asked for; its images/s are summed over the K runs. The precision is the
trainer's (``--amp`` / ``--channels-last``; auto = on for CUDA). Each row is written to ``<out>.json`` and
``<out>.md`` as soon as it is measured, so an interrupted benchmark keeps what it measured.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from imbalance_lab.losses import build_loss
from imbalance_lab.losses.ce import CELossConfig
from imbalance_lab.models import build_model
from imbalance_lab.runfolder import write_json_atomic, write_text_atomic
from imbalance_lab.schema import OptimConfig, TrainerConfig
from imbalance_lab.train import Member, Precision, fit_stack, resolve_device
from imbalance_lab.train.sync import synchronize

# Dense bf16 tensor-core peaks (FLOP/s), from the vendors' data sheets (SXM parts where there are several).
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
             "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12, "T4": 65e12}
INPUT = {"cnn_mnist": (1, 28, 28), "cnn_small": (3, 32, 32), "cnn_cifar": (3, 32, 32), "resnet32": (3, 32, 32)}
NUM_CLASSES = 10


def bf16_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK.items() if key in name), None)


def flops_per_image(model_name: str, device: torch.device, batch: int = 32) -> float:
    """Forward + backward FLOPs of one training image (counted on a batch, divided by its size)."""
    model = build_model(model_name, INPUT[model_name][0], NUM_CLASSES, [0.5] * INPUT[model_name][0],
                        [0.25] * INPUT[model_name][0]).to(device)
    x = torch.rand(batch, *INPUT[model_name], device=device)
    y = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / batch


def data(model_name: str, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    c, h, w = INPUT[model_name]
    return rng.integers(0, 256, (n, c, h, w), dtype=np.uint8), rng.integers(0, NUM_CLASSES, n).astype(np.int64)


def ours(model_name: str, x_np, y_np, batch: int, device: torch.device, stack: int, stacking: str,
         amp: bool | None = None, channels_last: bool | None = None) -> dict:
    """One warm-up epoch, then one timed epoch of ``fit_stack`` with ``stack`` models."""
    x, y = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
    trainer = TrainerConfig(epochs=2, batch_size=batch, eval_every=10**6, device=device.type, progress=False,
                            bn_recalibration_batches=0, stacking=stacking, amp=amp, channels_last=channels_last)
    members = []
    for k in range(stack):
        torch.manual_seed(k)
        loss_fn = build_loss(CELossConfig(), [1] * NUM_CLASSES).to(device)
        model = build_model(model_name, x.shape[1], NUM_CLASSES, [0.5] * x.shape[1], [0.25] * x.shape[1],
                            make_head=loss_fn.make_head).to(device)
        members.append(Member(model, loss_fn, torch.Generator(device=device).manual_seed(k)))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    engine = fit_stack(members, x, y, trainer_cfg=trainer, optim_cfg=OptimConfig(name="adam"), augment=True)
    seconds = members[0].history[-1]["seconds"]  # the second epoch's, synchronised at both ends
    steps = len(y) // batch
    return {"images_per_s": stack * steps * batch / seconds, "engine": engine,
            "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}


def plain(model_name: str, x_np, y_np, batch: int, device: torch.device) -> dict:
    """The loop a user would write: per-sample ToTensor/Normalize in a Dataset, a DataLoader, fp32, Adam."""
    from torchvision import transforms

    c = x_np.shape[1]
    images = x_np.transpose(0, 2, 3, 1)  # HWC, as ToTensor expects
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5] * c, [0.25] * c)])

    class PlainDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(y_np)

        def __getitem__(self, i):
            return transform(images[i]), int(y_np[i])

    loader = torch.utils.data.DataLoader(PlainDataset(), batch_size=batch, shuffle=True, drop_last=True)
    torch.manual_seed(0)
    model = build_model(model_name, c, NUM_CLASSES, [0.0] * c, [1.0] * c).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    seconds = 0.0
    for epoch in range(2):  # the first is the warm-up
        synchronize(device)
        t0 = time.perf_counter()
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        synchronize(device)
        seconds = time.perf_counter() - t0
    return {"images_per_s": len(loader) * batch / seconds}


def tri_state(value: str) -> bool | None:
    return {"auto": None, "on": True, "off": False}[value]


def write(out: Path, meta: dict, rows: list[dict]) -> None:
    """``<out>.json`` and ``<out>.md`` with the rows measured so far (each written atomically)."""
    write_json_atomic(out.with_suffix(".json"), {"meta": meta, "rows": rows})
    lines = [(f"Device: {meta['device']}, {meta['threads']} threads, torch {meta['torch']}, precision "
              f"{meta['precision']}; one epoch of {meta['steps_per_epoch']} steps after a warm-up epoch, timed "
              "from a device synchronisation to one, ours and the plain loop alike."), "",
             ("| model | batch | stack | engine | images/s (ours) | images/s (plain loop) | ratio | peak MB | "
              "GFLOP/image | MFU |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "–"
        mem = f"{r['peak_memory_mb']:.0f}" if r["peak_memory_mb"] is not None else "–"
        lines.append(f"| {r['model']} | {r['batch']} | {r['stack']} | {r['engine']} | {r['images_per_s']:.0f} | "
                     f"{r['plain_images_per_s']:.0f} | {r['ratio_to_plain']:.2f} | {mem} | "
                     f"{r['gflop_per_image']:.3f} | {mfu} |")
    write_text_atomic(out.with_suffix(".md"), "\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="cnn_mnist,cnn_small,cnn_cifar,resnet32",
                        help="comma-separated; name:batch gives a model its own batch size")
    parser.add_argument("--batch-sizes", default="128", help="comma-separated, for models without their own")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=40, help="training steps per timed epoch")
    parser.add_argument("--stacks", default="1", help="comma-separated stack sizes, e.g. 1,8,32")
    parser.add_argument("--stacking", default="auto",
                        help="comma-separated trainer.stacking values (auto, loop, vmap) for stacks of two or more")
    parser.add_argument("--amp", default="auto", choices=["auto", "on", "off"], help="trainer.amp")
    parser.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"],
                        help="trainer.channels_last")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--out", default="outputs/bench/results", help="results path without suffix")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    amp, channels_last = tri_state(args.amp), tri_state(args.channels_last)
    precision = Precision.of(TrainerConfig(device=device.type, amp=amp, channels_last=channels_last), device)
    peak = bf16_peak(device)
    device_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"CPU ({platform.processor() or platform.machine()})")
    meta = {"device": device_name, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "steps_per_epoch": args.steps, "bf16_peak_flops": peak, "precision": precision.describe(),
            "command": "python scripts/bench.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    write(out, meta, rows)
    engines = args.stacking.split(",")
    for spec in args.models.split(","):
        model_name, _, own_batch = spec.partition(":")
        per_image = flops_per_image(model_name, device)
        for batch in [int(own_batch)] if own_batch else map(int, args.batch_sizes.split(",")):
            x_np, y_np = data(model_name, args.steps * batch)
            base = plain(model_name, x_np, y_np, batch, device)
            for stack in map(int, args.stacks.split(",")):
                for stacking in ["loop"] if stack == 1 else engines:
                    result = ours(model_name, x_np, y_np, batch, device, stack, stacking, amp, channels_last)
                    rows.append({"model": model_name, "batch": batch, "stack": stack, "engine": result["engine"],
                                 "images_per_s": result["images_per_s"],
                                 "plain_images_per_s": base["images_per_s"],
                                 "ratio_to_plain": result["images_per_s"] / base["images_per_s"],
                                 "peak_memory_mb": result["peak_memory_mb"], "gflop_per_image": per_image / 1e9,
                                 "mfu": per_image * result["images_per_s"] / peak if peak else None})
                    write(out, meta, rows)
                    print(f"{model_name:<10} batch {batch:<4} stack {stack:<3} {result['engine']:<5} "
                          f"{result['images_per_s']:>9.0f} img/s  plain {base['images_per_s']:>8.0f}  "
                          f"x{rows[-1]['ratio_to_plain']:.2f}", flush=True)
    print(out.with_suffix(".md").read_text())
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
