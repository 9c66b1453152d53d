"""CycleGAN's ResNet-block generator (Zhu et al. 2017, after Johnson et al. 2016): a 7x7
convolution, two stride-2 downsamplings, `depth` (model.g.depth) residual blocks at 4 x width
channels, two stride-2 upsamplings and a 7x7 convolution to tanh. Reflection padding keeps the
borders free of the zero-padding artefacts; the resolution must divide by 4. `arch: cyclegan_resnet`
(not the SNGAN/BigGAN residual nets of distgan.models.resnet).
"""

from __future__ import annotations

from torch import Tensor, nn

from distgan.data.base import DataInfo
from distgan.errors import ConfigError
from distgan.models.norms import check_image_net, init_normal, norm2d


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, norm: str):
        super().__init__()
        bias = norm == "none"  # a normalization layer removes a bias before it (see unet.py)
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias),
                                  norm2d(norm, channels), nn.ReLU(), nn.ReflectionPad2d(1),
                                  nn.Conv2d(channels, channels, 3, bias=bias), norm2d(norm, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResNetTranslator(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, resolution: int, width: int, blocks: int,
                 norm: str = "instance"):
        super().__init__()
        if resolution % 4 or resolution < 8:
            raise ConfigError(f"model.g.arch=cyclegan_resnet needs data.resolution a multiple of 4 and >= 8, got {resolution}")
        if blocks < 0:
            raise ConfigError(f"model.g.depth (residual blocks) must be >= 0, got {blocks}")
        bias = norm == "none"  # a normalization layer removes a bias before it (see unet.py)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, width, 7, bias=bias),
                                   norm2d(norm, width), nn.ReLU()]
        ch = width
        for _ in range(2):
            layers += [nn.Conv2d(ch, 2 * ch, 3, 2, 1, bias=bias), norm2d(norm, 2 * ch), nn.ReLU()]
            ch *= 2
        layers += [ResidualBlock(ch, norm) for _ in range(blocks)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, 2, 1, output_padding=1, bias=bias), norm2d(norm, ch // 2),
                       nn.ReLU()]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_normal(self)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, R, R) -> (B, C_out, R, R) in [-1, 1]."""
        return self.net(x)


def build_generator(net_cfg, model_cfg, info: DataInfo) -> nn.Module:
    check_image_net("cyclegan_resnet", info, "model.g")
    c = info.shape[0]
    return ResNetTranslator(c, c, info.shape[-1], net_cfg.width, net_cfg.depth, net_cfg.norm)
