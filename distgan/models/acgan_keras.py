"""The AC-GAN of the Keras `mnist_acgan` example (Odena et al. 2017, as the Keras examples wrote it).

G: z -> Dense 1024 -> Dense 128 x R/4 x R/4 -> upsample -> conv 5x5 256 -> upsample -> conv 5x5 128
-> conv 2x2 C + tanh, ReLU between (R = data.resolution, 28 for MNIST: 7x7 at the start). The class
enters by multiplying z element-wise with a learned class embedding (distgan.models.conditional,
join "mul"). D: conv 3x3 32 stride 2 -> 64 -> 128 stride 2 -> 256, each with LeakyReLU(0.3, Keras'
default) and dropout 0.3 (its masks from the step's seeded stream: distgan.nn.dropout), flattened into
the real/fake logit; the class head on the same features is added by the conditional wrapper
(model.d.conditioning=aux), which asks the net to initialise it (`init_added`). `width` and `depth`
are not used (the example's sizes are fixed).

As Keras computes them, so that the same weights give Keras's outputs (tests/unit/test_acgan_keras.py
copies them into the example rebuilt in Keras 3): `padding='same'` is TensorFlow's rule, the odd
pixel of padding after (a stride-2 3x3 conv on an even side pads 0 before and 1 after, not 1 and 1);
the initializers are Keras's: glorot_uniform wherever the example names none (all of D, G's Dense
layers), its truncated `glorot_normal` where it names that (G's convolutions, the class embedding),
biases 0.
"""

from __future__ import annotations

import math
from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from distgan.data.base import DataInfo
from distgan.errors import ConfigError
from distgan.models.outputs import named_outputs
from distgan.nn.dropout import StepDropout

# The standard deviation of a unit normal truncated to [-2, 2]: Keras divides glorot_normal's target
# deviation by it, so that the truncated draw has the target deviation sqrt(2 / (fan_in + fan_out)).
TRUNCATED_STD = 0.87962566103423978


def _fan_sum(weight: Tensor) -> int:
    """fan_in + fan_out as Keras counts them: (in + out) x kernel area; an embedding (classes, dim)
    counts classes + dim, as a linear weight (out, in) counts out + in."""
    return (weight.shape[0] + weight.shape[1]) * math.prod(weight.shape[2:])


def glorot_uniform_(module: nn.Module) -> None:
    """Keras's default kernel initializer, U(-l, l) with l = sqrt(6 / (fan_in + fan_out)); bias 0."""
    limit = math.sqrt(6.0 / _fan_sum(module.weight))
    nn.init.uniform_(module.weight, -limit, limit)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)


def glorot_normal_(module: nn.Module) -> None:
    """Keras's `glorot_normal`: a normal truncated at 2 standard deviations, its deviation
    sqrt(2 / (fan_in + fan_out)) / TRUNCATED_STD; bias 0."""
    std = math.sqrt(2.0 / _fan_sum(module.weight)) / TRUNCATED_STD
    nn.init.trunc_normal_(module.weight, 0.0, std, -2 * std, 2 * std)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)


class SameConv2d(nn.Conv2d):
    """Conv2d with Keras's `padding='same'` (TensorFlow's rule, which Keras 3 keeps on every backend):
    out = ceil(in / stride), and the total padding max((out - 1) * stride + k - in, 0) split with the odd
    pixel after. torch's padding=1 pads 1 and 1, which moves a stride-2 conv's grid by a pixel."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        pads: list[int] = []  # F.pad's order: last dim first, (before, after) each
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class KerasACGANGenerator(nn.Module):
    def __init__(self, z_dim: int, out_channels: int, resolution: int):
        super().__init__()
        if resolution % 4:
            raise ConfigError(f"acgan_keras needs data.resolution divisible by 4, got {resolution}")
        s = resolution // 4
        self.start = (128, s, s)
        self.dense = nn.Sequential(nn.Linear(z_dim, 1024), nn.ReLU(), nn.Linear(1024, 128 * s * s), nn.ReLU())
        # Keras 'same' for stride 1: 2 and 2 for the 5x5 kernels, 0 and 1 for the 2x2 one.
        self.conv = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(128, 256, 5, padding=2), nn.ReLU(),
            nn.Upsample(scale_factor=2), nn.Conv2d(256, 128, 5, padding=2), nn.ReLU(),
            nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(128, out_channels, 2), nn.Tanh())
        for m in self.dense:
            if isinstance(m, nn.Linear):
                glorot_uniform_(m)  # the example names no initializer for its Dense layers
        for m in self.conv:
            if isinstance(m, nn.Conv2d):
                glorot_normal_(m)  # kernel_initializer='glorot_normal'

    def init_added(self, embed: nn.Module) -> None:
        """The class embedding the conditional wrapper adds: Embedding(..., embeddings_initializer=
        'glorot_normal') in the example."""
        glorot_normal_(embed)

    def forward(self, z: Tensor) -> Tensor:
        return self.conv(self.dense(z).view(-1, *self.start))  # (B, z) -> (B, C, R, R)


class KerasACGANDiscriminator(nn.Module):
    def __init__(self, in_channels: int, resolution: int):
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout, stride in ((in_channels, 32, 2), (32, 64, 1), (64, 128, 2), (128, 256, 1)):
            layers += [SameConv2d(cin, cout, 3, stride), nn.LeakyReLU(0.3), StepDropout(0.3)]
        side = -(-resolution // 4)  # ceil(ceil(R / 2) / 2): 'same' with stride 2, twice
        layers += [nn.Flatten(), nn.Linear(256 * side * side, 1)]
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                glorot_uniform_(m)  # the example names no initializer in D

    def init_added(self, head: nn.Module) -> None:
        """The class head the conditional wrapper adds (Dense(10, softmax) in the example): Keras's default."""
        glorot_uniform_(head)

    def forward(self, x: Tensor, outputs: Optional[tuple[str, ...]] = None):
        """(B,) logits; with `outputs`, a dict of `logits` and `features` (the flattened convolutions)."""
        if outputs is None:
            return self.net(x).flatten()
        return named_outputs(self.net, x, outputs)


def _check_images(info: DataInfo) -> None:
    if info.kind != "images":
        raise ConfigError("acgan_keras works on images; use arch=mlp for 2-D point data")


def build_generator(net_cfg, model_cfg, info: DataInfo) -> nn.Module:
    _check_images(info)
    return KerasACGANGenerator(model_cfg.z_dim, info.shape[0], info.shape[-1])


def build_discriminator(net_cfg, model_cfg, info: DataInfo) -> nn.Module:
    _check_images(info)
    return KerasACGANDiscriminator(info.shape[0], info.shape[-1])
