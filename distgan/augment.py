"""Differentiable augmentation of every image D sees, for small data sets (`augment:` config section).

- DiffAugment (Zhao et al. 2020): its ops (colour, translation by up to 1/8 of the side, cutout of
  half the side) on every real and fake image, in both players' losses. D never sees an
  unaugmented image, and G's gradient flows back through the ops, so G is not taught to make
  augmented-looking images.
- ADA (Karras et al. 2020): each op is applied to a sample with probability p. p follows D's
  overfitting heuristic r_t = E[sign(D(real))]: every `interval` D steps it moves by
  sign(r_t - target) x (real images seen) / (kimg x 1000), so it can go from 0 to 1 within `kimg`
  thousand images. Below p ~ 0.8 the augmentations do not leak into G's samples (the paper, sec. 2.3).

Games call `Augment.__call__` on every input of D (`Game.d_view`) and `observe_real` with D's
logits of the real batch. Every random number comes from the step context, drawn for the global
batch and sliced per rank, and r_t is gathered over all ranks, so P processes augment exactly like
one process with the global batch, and p (in the game's state) is the same on every rank.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from distgan.step_context import StepContext

TRANSLATION_RATIO = 1 / 8  # DiffAugment's and ADA's integer translation: up to 1/8 of the side
CUTOUT_RATIO = 1 / 2  # DiffAugment's cutout: a square of half the side
# ADA's parameter spreads (Karras et al. 2020, appendix B.2, the defaults of their code).
SCALE_STD = 0.2 * math.log(2)  # isotropic scale: lognormal
BRIGHTNESS_STD = 0.2  # additive, on [-1, 1] images as in the paper's code
CONTRAST_STD = 0.5 * math.log(2)  # lognormal
SATURATION_STD = 1.0 * math.log(2)  # lognormal

# --------------------------------------------------------------------------- ops
# Each op maps images (B, C, H, W) and its uniforms u (B, k) in [0, 1) to augmented images, differentiably
# in the images. `OPS` holds (number of uniforms, function); an op's first uniform of every sample
# decides (outside the op) whether the sample gets it.


def _normal(u: Tensor) -> Tensor:
    """Standard normal quantiles of uniforms (inverse CDF), clamped away from +-inf."""
    return torch.special.ndtri(u.clamp(1e-6, 1 - 1e-6))


def _shift_index(size: int, shift: Tensor, reflect: bool) -> tuple[Tensor, Tensor]:
    """Source index of every output position for integer shifts (B,) along an axis of `size`:
    (B, size) indices, and (B, size) whether the source lies inside the image (zero fill outside)."""
    src = torch.arange(size, device=shift.device)[None, :] - shift[:, None]  # (B, size)
    inside = (src >= 0) & (src < size)
    if reflect:  # mirror at the border (ADA pads by reflection); shifts are < size, one fold suffices
        src = torch.where(src < 0, -src, src)
        src = torch.where(src >= size, 2 * (size - 1) - src, src)
        inside = torch.ones_like(inside)
    return src.clamp(0, size - 1), inside


def _translate(x: Tensor, u: Tensor, reflect: bool) -> Tensor:
    B, C, H, W = x.shape
    shifts = []
    for col, size in ((0, H), (1, W)):
        s = int(size * TRANSLATION_RATIO + 0.5)
        shifts.append((u[:, col] * (2 * s + 1)).floor().long().clamp(max=2 * s) - s)  # uniform in [-s, s]
    rows, row_in = _shift_index(H, shifts[0], reflect)
    cols, col_in = _shift_index(W, shifts[1], reflect)
    out = x.gather(2, rows[:, None, :, None].expand(B, C, H, W))
    out = out.gather(3, cols[:, None, None, :].expand(B, C, H, W))
    keep = (row_in[:, :, None] & col_in[:, None, :])[:, None]  # (B, 1, H, W)
    return out * keep.to(x.dtype)


def translation(x: Tensor, u: Tensor) -> Tensor:
    """DiffAugment: shift by up to 1/8 of the side along each axis, zero fill (u: (B, 2))."""
    return _translate(x, u, reflect=False)


def xint(x: Tensor, u: Tensor) -> Tensor:
    """ADA's integer translation: up to 1/8 of the side, mirrored at the border (u: (B, 2))."""
    return _translate(x, u, reflect=True)


def cutout(x: Tensor, u: Tensor) -> Tensor:
    """DiffAugment: zero a square of half the side at a uniform position, partly outside allowed (u: (B, 2))."""
    B, _, H, W = x.shape
    keep = torch.ones(B, 1, H, W, dtype=x.dtype, device=x.device)
    masks = []
    for col, size in ((0, H), (1, W)):
        side = int(size * CUTOUT_RATIO + 0.5)
        start = (u[:, col] * (size + 1 - side % 2)).floor().long() - side // 2  # (B,)
        pos = torch.arange(size, device=x.device)[None, :]
        masks.append((pos >= start[:, None]) & (pos < start[:, None] + side))  # (B, size)
    cut = (masks[0][:, :, None] & masks[1][:, None, :])[:, None]  # (B, 1, H, W)
    return x * (keep - cut.to(x.dtype))


def color(x: Tensor, u: Tensor) -> Tensor:
    """DiffAugment's colour: brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5) (u: (B, 3))."""
    x = x + (u[:, 0] - 0.5).to(x.dtype)[:, None, None, None]
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * (u[:, 1] * 2).to(x.dtype)[:, None, None, None] + mean
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * (u[:, 2] + 0.5).to(x.dtype)[:, None, None, None] + mean


def xflip(x: Tensor, u: Tensor) -> Tensor:
    """ADA: mirror left-right (u unused beyond the gate)."""
    return x.flip(3)


def rotate90(x: Tensor, u: Tensor) -> Tensor:
    """ADA: rotate by a multiple of 90 degrees, uniform over the four (u: (B, 1); square images)."""
    k = (u[:, 0] * 4).floor().long().clamp(max=3)  # (B,)
    turns = [torch.rot90(x, t, (2, 3)) for t in range(4)]
    out = turns[0]
    for t in range(1, 4):
        out = torch.where((k == t)[:, None, None, None], turns[t], out)
    return out


def _warp(x: Tensor, theta: Tensor) -> Tensor:
    """Bilinear resampling by the (B, 2, 3) affine map of output to input coordinates, mirrored at the border."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def scale(x: Tensor, u: Tensor) -> Tensor:
    """ADA: isotropic scaling, lognormal with std 0.2 ln 2 (u: (B, 1))."""
    s = torch.exp(_normal(u[:, 0]) * SCALE_STD)  # (B,)
    theta = torch.zeros(len(x), 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / s  # output coordinates -> input: zoom in by s
    return _warp(x, theta)


def rotation(x: Tensor, u: Tensor) -> Tensor:
    """ADA: rotation by a uniform angle in [-180, 180) degrees (u: (B, 1))."""
    a = (u[:, 0] * 2 - 1) * math.pi
    cos, sin = torch.cos(a), torch.sin(a)
    theta = torch.zeros(len(x), 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    return _warp(x, theta)


def brightness(x: Tensor, u: Tensor) -> Tensor:
    """ADA: add N(0, 0.2) to every pixel of a sample (u: (B, 1))."""
    return x + (_normal(u[:, 0]) * BRIGHTNESS_STD).to(x.dtype)[:, None, None, None]


def contrast(x: Tensor, u: Tensor) -> Tensor:
    """ADA: scale around the sample's mean, lognormal with std 0.5 ln 2 (u: (B, 1))."""
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * torch.exp(_normal(u[:, 0]) * CONTRAST_STD).to(x.dtype)[:, None, None, None] + mean


def saturation(x: Tensor, u: Tensor) -> Tensor:
    """ADA: scale each pixel's colour around its grey, lognormal with std ln 2 (u: (B, 1)); a no-op on 1 channel."""
    mean = x.mean(1, keepdim=True)
    return (x - mean) * torch.exp(_normal(u[:, 0]) * SATURATION_STD).to(x.dtype)[:, None, None, None] + mean


OPS: dict[str, tuple[int, Callable[[Tensor, Tensor], Tensor]]] = {
    "color": (3, color), "translation": (2, translation), "cutout": (2, cutout),
    "xflip": (0, xflip), "rotate90": (1, rotate90), "xint": (2, xint), "scale": (1, scale),
    "rotation": (1, rotation), "brightness": (1, brightness), "contrast": (1, contrast),
    "saturation": (1, saturation),
}
DEFAULT_POLICY = {
    "diffaugment": ("color", "translation", "cutout"),  # Zhao et al.'s full policy
    # ADA's pixel blitting, general geometric and colour groups ('bgc', the paper's default).
    "ada": ("xflip", "rotate90", "xint", "scale", "rotation", "brightness", "contrast", "saturation"),
}


def augment_images(x: Tensor, u: Tensor, policy: tuple[str, ...], p: float) -> Tensor:
    """x (B, C, H, W) with each op of `policy`, in order, applied to each sample with probability p.
    u (B, uniforms(policy)): per op, one uniform that gates it (< p) and the op's own. At p = 0 the
    result is x itself; at p = 1 every op applies."""
    col = 0
    for name in policy:
        k, op = OPS[name]
        gate, params = u[:, col], u[:, col + 1 : col + 1 + k]
        col += 1 + k
        if p >= 1:
            x = op(x, params)
        elif p > 0:
            x = torch.where((gate < p)[:, None, None, None], op(x, params), x)
    return x


def uniforms(policy: tuple[str, ...]) -> int:
    """Uniforms per sample that `augment_images` reads for `policy`."""
    return sum(1 + OPS[name][0] for name in policy)


# --------------------------------------------------------------------------- the game's augmenter


class Augment:
    """The `augment:` section at work: augments D's inputs and, for ADA, adapts p (checkpointed state)."""

    def __init__(self, cfg):
        self.adaptive = cfg.name == "ada"
        self.policy = tuple(cfg.policy) or DEFAULT_POLICY[cfg.name]
        self.target, self.interval, self.kimg = cfg.target, cfg.interval, cfg.kimg
        self.p = float(cfg.p) if self.adaptive else 1.0
        # Since the last adjustment of p: sum of sign(D(real)) and reals seen over all ranks, D steps.
        self.sign_sum, self.seen, self.d_steps = 0, 0, 0
        self._observed = False

    def __call__(self, x: Tensor, ctx: "StepContext") -> Tensor:
        """D's view of images x (B, C, H, W), B a multiple of the micro-batch (e.g. G's 2 noise batches).
        The uniforms are drawn whatever p is, so the draws after them never depend on p."""
        n = len(x)
        if n % ctx.local_batch:
            raise ValueError(f"augment: D's input of {n} images is not a whole number of micro-batches "
                             f"of {ctx.local_batch}")
        k = uniforms(self.policy)
        u = torch.cat([ctx.rand(k) for _ in range(n // ctx.local_batch)])  # (B, k), per chunk like the games' z
        return augment_images(x, u.to(x.device), self.policy, self.p)

    def observe_real(self, logits: Tensor, ctx: "StepContext") -> None:
        """Count sign(D(real)) over the global batch (gathered: the same numbers on every rank)."""
        if not self.adaptive:
            return
        signs = ctx.gather(torch.sign(logits.detach().float().reshape(-1)))
        self.sign_sum += int(signs.sum().item())
        self.seen += signs.numel()
        self._observed = True

    def after_d_step(self) -> None:
        """After an optimizer step of D: every `interval` D steps that saw reals, move p towards the target."""
        if not (self.adaptive and self._observed):
            return
        self._observed = False
        self.d_steps += 1
        if self.d_steps % self.interval:
            return
        r_t = self.sign_sum / self.seen
        step = self.seen / (self.kimg * 1000)
        self.p = min(max(self.p + (step if r_t > self.target else -step if r_t < self.target else 0.0), 0.0), 1.0)
        self.sign_sum, self.seen = 0, 0

    @property
    def r_t(self) -> Optional[float]:
        return self.sign_sum / self.seen if self.seen else None

    def state_dict(self) -> dict:
        # Tensors, so checkpoint comparisons (bitwise resume, 1 vs 2 processes) include them.
        return {"p": torch.tensor(self.p, dtype=torch.float64),
                "counts": torch.tensor([self.sign_sum, self.seen, self.d_steps], dtype=torch.int64)}

    def load_state_dict(self, state: dict) -> None:
        self.p = float(state["p"])
        self.sign_sum, self.seen, self.d_steps = (int(v) for v in state["counts"])


def build_augment(cfg) -> Optional[Augment]:
    """The augmenter of a config's `augment:` section; None for augment.name=none."""
    return None if cfg.augment.name == "none" else Augment(cfg.augment)
