"""BiGAN / ALI (Donahue et al. 2017; Dumoulin et al. 2017): an encoder E learns x -> z while G learns
z -> x, and D judges joint pairs, (x, E(x)) for real data against (G(z), z) for the prior.

At the optimum the two joint distributions match, so E inverts G: G(E(x)) reconstructs x
(`distgan sample --encode`) and E(x) is a representation (`distgan encode`). E and G are the
generator player, stepped by one optimizer (`optim.g`), as in both papers; D (model.d's architecture
for x, an MLP for z, a joint MLP: distgan.models.joint) is the discriminator player (`optim.d`).

The generator player's loss is the non-saturating one with the labels swapped: G wants its pairs
judged real, E wants the data pairs judged fake (the BiGAN paper's "inverted" objective, which
has the same fixed point as the minimax game and stronger gradients early on).

ALI's two changes, both options: a stochastic encoder (`game.stochastic_encoder`: E outputs a mean
and a log-variance and the pair's code is a draw mu + sigma * eps, the reparameterisation trick;
`distgan encode` writes the mean) and dropout on every layer of D (`game.d_dropout`, masks drawn from
the step's seeded stream). On the digits they add 10-13 points of reconstructions that keep the
digit (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Mapping, Optional

from torch import Tensor, nn

from distgan import losses
from distgan.data.base import Batch, DataInfo
from distgan.games.base import DISCRIMINATOR, GENERATOR, EncoderGame, Phase, StepContext
from distgan.models import build_net
from distgan.models.joint import build_joint_discriminator
from distgan.nn.dropout import dropout_masks
from distgan.sections.games import BiGANConfig



class BiGANGame(EncoderGame):
    Config = BiGANConfig

    def __init__(self, cfg, info: DataInfo):
        super().__init__()
        self.z_dim = cfg.model.z_dim
        self.gaussian_posterior = cfg.game.stochastic_encoder
        self.nets = {
            "G": build_net(GENERATOR, "model.g", cfg.model.g, cfg.model, info),
            "E": build_net("encoder", "model.e", cfg.model.e, cfg.model, info,
                           out_dim=2 * self.z_dim if self.gaussian_posterior else self.z_dim),
            "D": build_joint_discriminator("model.d", cfg.model.d, cfg.model, info, dropout=cfg.game.d_dropout),
        }
        self.players = {GENERATOR: ("G", "E"), DISCRIMINATOR: ("D",)}

    def phases(self) -> list[Phase]:
        # uses_data: both phases see real data (E encodes it in the generator player's phase too).
        return [Phase("D", DISCRIMINATOR, self.d_loss), Phase("G", GENERATOR, self.g_loss)]

    def _pairs(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, Tensor]:
        """D's logits of the data pairs (x, E(x)) and of the prior pairs (G(z), z), each (B,)."""
        n = self.nets
        z = ctx.randn(self.z_dim)
        code = self._code(n["E"], batch.x, ctx)
        with dropout_masks(ctx.rand, n["D"]):  # D's dropout (ALI), seeded by the step
            return n["D"](batch.x, code), n["D"](n["G"](z), z)

    def d_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        # E and G are frozen in this phase (the trainer), so their outputs carry no graph to train.
        real, fake = self._pairs(batch, ctx)
        return losses.d_cross_entropy(real, fake)

    def g_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        real, fake = self._pairs(batch, ctx)
        # G: its pairs judged real; E: the data pairs judged fake (labels swapped).
        return {"G": losses.g_nonsaturating(fake), "E": losses.g_nonsaturating(-real)}

    def encode(self, nets: Mapping[str, nn.Module], x: Tensor) -> Tensor:
        return self._code(nets["E"], x, None)  # (B, z_dim); the mean of a stochastic encoder
