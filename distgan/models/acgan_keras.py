"""The AC-GAN of the Keras `mnist_acgan` example (Odena et al. 2017, as the Keras examples wrote it).

G: z -> Dense 1024 -> Dense 128 x R/4 x R/4 -> upsample -> conv 5x5 256 -> upsample -> conv 5x5 128
-> conv 2x2 C + tanh, ReLU between (R = data.resolution, 28 for MNIST: 7x7 at the start). The class
enters by multiplying z element-wise with a learned class embedding (distgan.models.conditional,
join "mul"). D: conv 3x3 32 stride 2 -> 64 -> 128 stride 2 -> 256, each with LeakyReLU(0.3, Keras'
default) and dropout 0.3 (its masks from the step's seeded stream: distgan.nn.dropout), flattened into
the real/fake logit; the class head on the same features is added by the conditional wrapper
(model.d.conditioning=aux). Glorot-normal convolutions as in Keras; `width` and `depth` are not used
(the example's sizes are fixed).
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from distgan.data.base import DataInfo
from distgan.errors import ConfigError
from distgan.models.outputs import named_outputs
from distgan.nn.dropout import StepDropout


def _glorot(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)


class KerasACGANGenerator(nn.Module):
    def __init__(self, z_dim: int, out_channels: int, resolution: int):
        super().__init__()
        if resolution % 4:
            raise ConfigError(f"acgan_keras needs data.resolution divisible by 4, got {resolution}")
        s = resolution // 4
        self.start = (128, s, s)
        self.dense = nn.Sequential(nn.Linear(z_dim, 1024), nn.ReLU(), nn.Linear(1024, 128 * s * s), nn.ReLU())
        self.conv = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(128, 256, 5, padding=2), nn.ReLU(),
            nn.Upsample(scale_factor=2), nn.Conv2d(256, 128, 5, padding=2), nn.ReLU(),
            nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(128, out_channels, 2), nn.Tanh())  # Keras 'same': pad after
        _glorot(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.conv(self.dense(z).view(-1, *self.start))  # (B, z) -> (B, C, R, R)


class KerasACGANDiscriminator(nn.Module):
    def __init__(self, in_channels: int, resolution: int):
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout, stride in ((in_channels, 32, 2), (32, 64, 1), (64, 128, 2), (128, 256, 1)):
            layers += [nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.3), StepDropout(0.3)]
        half = -(-resolution // 2)  # ceil: a stride-2 convolution with padding 1
        side = -(-half // 2)
        layers += [nn.Flatten(), nn.Linear(256 * side * side, 1)]
        self.net = nn.Sequential(*layers)
        _glorot(self)

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
