"""FixMatch's strong augmentation, batched on the device: RandAugment (Cubuk et al. 2020) with FixMatch's op
pool, then Cutout — as the FixMatch reimplementations DebiasPL builds on draw it per PIL image
(``RandAugmentMC(n=2, m=10)`` and ``fixmatch_augment_pool`` in github.com/kekmodel/FixMatch-pytorch
``dataset/randaugment.py``, copied into github.com/frank-xwang/debiased-pseudo-labeling ``data/randaugment.py``):

    for each of n=2 rounds: op ~ uniform over the 14 ops, v ~ uniform{1..9}, applied with probability 1/2
    then Cutout: a 16×16 (half the side) grey (127) square at a uniform centre, clipped at the border

Magnitudes (v/10 of the maximum, plus the bias): brightness, color (saturation), contrast, sharpness factor
0.05 + 0.09 v; posterize to 4 + ⌊0.4 v⌋ bits; solarize above 256 − ⌊25.6 v⌋; rotate ±3v degrees; shear ±0.03 v;
translate ±0.03 v of the side. Each image draws its own ops, magnitudes and signs from the generator given
(deterministic under the seed); every op is computed for the whole batch and selected per image with
``torch.where`` (no data-dependent shapes, hence no host sync), the five geometric ops as one batched
``affine_grid``/``grid_sample`` (nearest, grey 128 fill, as PIL's default resampling and FixMatch's fill).
Differences from the PIL code: shears act about the image centre, not the top-left corner; autocontrast and
equalize are torchvision's batched ops (per channel, like PIL's on RGB; autocontrast rewritten here without
its host sync)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

OPS = ("autocontrast", "brightness", "color", "contrast", "equalize", "identity", "posterize", "rotate",
       "sharpness", "shear_x", "shear_y", "solarize", "translate_x", "translate_y")
GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
CUTOUT_FRACTION = 0.5  # of the image side (FixMatch: CutoutAbs(img, int(32 * 0.5)))


def strong_augment(x: torch.Tensor, generator: torch.Generator, rounds: int = 2) -> torch.Tensor:
    """RandAugment (``rounds`` ops per image) + Cutout of a uint8 batch (N, C, H, W); uint8 out."""
    for _ in range(rounds):
        x = _one_round(x, generator)
    return cutout(x, generator)


def _draw(n: int, x: torch.Tensor, generator: torch.Generator):
    op = torch.randint(0, len(OPS), (n,), device=x.device, generator=generator)
    v = torch.randint(1, 10, (n,), device=x.device, generator=generator).float()
    apply = torch.rand(n, device=x.device, generator=generator) < 0.5
    sign = torch.where(torch.rand(n, device=x.device, generator=generator) < 0.5, -1.0, 1.0)
    return torch.where(apply, op, OPS.index("identity")), v, sign


def _one_round(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    op, v, sign = _draw(n, x, generator)
    factor = (0.05 + 0.09 * v).view(n, 1, 1, 1)  # _float_parameter(v, 0.9) + 0.05
    out = _geometric(x, op, v, sign)
    xf = x.float()
    candidates = {
        "autocontrast": lambda: _autocontrast(xf),
        "brightness": lambda: _to_uint8(xf * factor),
        "color": lambda: _blend(xf, _gray(xf), factor),
        "contrast": lambda: _blend(xf, _gray(xf).mean(dim=(1, 2, 3), keepdim=True), factor),
        "equalize": lambda: TF.equalize(x),
        "posterize": lambda: x & _posterize_mask(v).view(n, 1, 1, 1),
        "sharpness": lambda: _blend(xf, _smooth(xf), factor),
        "solarize": lambda: torch.where(xf >= (256 - (25.6 * v).floor()).view(n, 1, 1, 1), 255 - x, x),
    }
    for name, make in candidates.items():
        out = torch.where((op == OPS.index(name)).view(n, 1, 1, 1), make(), out)
    return out


def _autocontrast(xf: torch.Tensor) -> torch.Tensor:
    """Each channel stretched to [0, 255]; a constant channel kept. torchvision's ``autocontrast`` to the bit,
    written with ``torch.where``: its boolean-mask assignment waits for the device on CUDA."""
    low, high = xf.amin(dim=(-2, -1), keepdim=True), xf.amax(dim=(-2, -1), keepdim=True)
    flat = high == low
    scale = torch.where(flat, 1.0, (high - low).mul_(1.0 / 255))
    return (xf - torch.where(flat, 0.0, low)).div_(scale).clamp_(0, 255).to(torch.uint8)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp_(0, 255).to(torch.uint8)


def _blend(x: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ImageEnhance: degenerate + factor · (x − degenerate)."""
    return _to_uint8(degenerate + factor * (x - degenerate))


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma (PIL's "L"), kept as one channel (or the image itself if it has one)."""
    if x.shape[1] != 3:
        return x
    # scalars, not a weight tensor: making one from host data inside the step loop is a synchronous copy on CUDA
    return x[:, 0:1] * 0.299 + x[:, 1:2] * 0.587 + x[:, 2:3] * 0.114


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH filter (3×3, centre 5, others 1, /13) with the border pixels kept, as ImageEnhance.Sharpness."""
    c = x.shape[1]
    kernel = torch.ones(3, 3, device=x.device)
    kernel[1, 1] = 5
    kernel = (kernel / 13).expand(c, 1, 3, 3)
    inner = F.conv2d(x, kernel, groups=c)
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = inner
    return out


def _posterize_mask(v: torch.Tensor) -> torch.Tensor:
    bits = 4 + (0.4 * v).floor()  # _int_parameter(v, 4) + 4
    return (256 - torch.pow(2.0, 8 - bits)).to(torch.uint8)


def _geometric(x: torch.Tensor, op: torch.Tensor, v: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """The images whose op is geometric, transformed; the others unchanged (an identity matrix)."""
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    angle = sign * v * 3.0 * math.pi / 180  # ±30 · v/10 degrees
    shear = sign * 0.03 * v  # ±0.3 · v/10
    shift = sign * 0.03 * v * 2  # ±0.3 · v/10 of the side, in grid units (the side spans 2)
    is_ = {name: op == OPS.index(name) for name in GEOMETRIC}
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta[:, 0, 0] = torch.where(is_["rotate"], cos, theta[:, 0, 0])
    theta[:, 1, 1] = torch.where(is_["rotate"], cos, theta[:, 1, 1])
    theta[:, 0, 1] = torch.where(is_["rotate"], -sin, torch.where(is_["shear_x"], shear, 0.0))
    theta[:, 1, 0] = torch.where(is_["rotate"], sin, torch.where(is_["shear_y"], shear, 0.0))
    theta[:, 0, 2] = torch.where(is_["translate_x"], shift, 0.0)
    theta[:, 1, 2] = torch.where(is_["translate_y"], shift, 0.0)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # grid_sample fills with 0: shift so that 0 is the grey fill.
    moved = F.grid_sample(x.float() - 128, grid, mode="nearest", padding_mode="zeros", align_corners=False) + 128
    geometric = torch.stack(list(is_.values())).any(0).view(n, 1, 1, 1)
    return torch.where(geometric, _to_uint8(moved), x)


def cutout(x: torch.Tensor, generator: torch.Generator, fraction: float = CUTOUT_FRACTION) -> torch.Tensor:
    """FixMatch's CutoutAbs: centre (cx, cy) uniform in [0, W) × [0, H); x0 = ⌊max(0, cx − s/2)⌋,
    x1 = ⌊min(W, x0 + s)⌋ (likewise y), s = ⌊fraction · W⌋; the square filled with grey 127."""
    n, _, h, w = x.shape
    s = int(w * fraction)
    cx = torch.rand(n, device=x.device, generator=generator) * w
    cy = torch.rand(n, device=x.device, generator=generator) * h
    x0 = (cx - s / 2).clamp(min=0).floor()
    y0 = (cy - s / 2).clamp(min=0).floor()
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    inside = ((cols >= x0.view(n, 1, 1)) & (cols < (x0 + s).clamp(max=w).view(n, 1, 1))
              & (rows >= y0.view(n, 1, 1)) & (rows < (y0 + s).clamp(max=h).view(n, 1, 1)))
    return torch.where(inside.unsqueeze(1), torch.full_like(x, 127), x)
