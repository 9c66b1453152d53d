"""CoGAN's coupled nets (Liu & Tuzel 2016): one module per player, weights shared across the domains.

- `CoupledGenerator`: a DCGAN generator whose layers up to the last are one trunk shared by both
  domains; each domain has its own last (transposed conv + tanh) layer. The shared trunk decodes
  the high-level content of z, the heads only its rendering, so G(z) gives a corresponding pair.
- `CoupledDiscriminator`: a DCGAN discriminator whose first layer is per domain and whose later
  layers (the high-level features and the logit) are shared.

Being one module each, the shared layers are one set of parameters: both branches' gradients add
up in them by autograd, and the trainer, DDP and the optimizers see ordinary nets.
"""

from __future__ import annotations

from torch import Tensor, nn

from distgan.models.dcgan import _norm, _num_stages, dcgan_init

DOMAINS = ("A", "B")


class CoupledGenerator(nn.Module):
    def __init__(self, z_dim: int, out_channels: int, resolution: int, width: int, norm: str):
        super().__init__()
        stages = _num_stages(resolution)
        ch = width * 2 ** (stages - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(z_dim, ch, 4, 1, 0, bias=norm != "batch"), _norm(norm, ch),
                                   nn.ReLU(True)]
        for _ in range(stages - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=norm != "batch"), _norm(norm, ch // 2),
                       nn.ReLU(True)]
            ch //= 2
        self.shared = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({d: nn.Sequential(nn.ConvTranspose2d(ch, out_channels, 4, 2, 1), nn.Tanh())
                                    for d in DOMAINS})
        dcgan_init(self)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(B, z) -> the pair (B, C, R, R) of domain A, (B, C, R, R) of domain B, from one trunk pass."""
        h = self.shared(z[:, :, None, None])
        return self.heads["A"](h), self.heads["B"](h)


class CoupledDiscriminator(nn.Module):
    def __init__(self, in_channels: int, resolution: int, width: int, norm: str):
        super().__init__()
        stages = _num_stages(resolution)
        # No normalization on the input layer (DCGAN paper).
        self.stems = nn.ModuleDict({d: nn.Sequential(nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True))
                                    for d in DOMAINS})
        ch, layers = width, []
        for _ in range(stages - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=norm != "batch"), _norm(norm, ch * 2),
                       nn.LeakyReLU(0.2, True)]
            ch *= 2
        layers.append(nn.Conv2d(ch, 1, 4, 1, 0))  # 4x4 -> 1x1 logit
        self.shared = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        """Images of domain A (B_a, C, R, R) and of domain B (B_b, C, R, R) -> their logits (B_a,), (B_b,).
        The shared layers run once per domain, so BatchNorm (if any) keeps each domain's statistics apart."""
        return self.shared(self.stems["A"](a)).flatten(), self.shared(self.stems["B"](b)).flatten()
