"""BigGAN (Brock et al. 2019): class-conditional training at large batch.

The CGAN game with BigGAN's choices: G(z, y) is the sngan ResNet whose BatchNorms are conditional
on a shared class embedding joined to this block's chunk of a hierarchical z
(distgan.models.resnet); D is the projection discriminator (Miyato & Koyama 2018) on the sngan
ResNet D, spectrally normalised with its class embedding; hinge loss; `game.n_critic` D steps per G
step (2); G's loss adds BigGAN's off-diagonal orthogonal regularisation of its weights
(`game.ortho_weight`, beta = 1e-4 in the paper). The rest of BigGAN is configuration: TTUR
(`optim.g.lr` 1e-4, `optim.d.lr` 4e-4, betas (0, 0.999)), the EMA generator with `train.ema_start`,
cross-replica BN (`model.sync_bn`), and the truncation trick when sampling (`distgan sample
--truncation`, `eval.truncation`).
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor
from torch.nn.utils.parametrizations import spectral_norm

from distgan import losses
from distgan.data.base import Batch, DataInfo
from distgan.games.base import DISCRIMINATOR, GENERATOR, Game, Phase, StepContext, unwrapped
from distgan.games.conditional import ConditionalGame, require_labels
from distgan.models import finish_net
from distgan.models.blocks import orthogonal_penalty
from distgan.models.conditional import build_conditional_discriminator
from distgan.models.resnet import build_conditional_generator
from distgan.sections.games import BigGANConfig



class BigGANGame(ConditionalGame):
    Config = BigGANConfig
    truncates = True  # sampling draws its noise truncated (set_truncation: sample --truncation, eval.truncation)

    def __init__(self, cfg, info: DataInfo):
        Game.__init__(self)
        self.cfg = cfg.game
        self.classes = require_labels(cfg, info)
        self.z_dim = cfg.model.z_dim
        self.loss = losses.adversarial(self.cfg.loss)
        self.conditioning, self.aux = "projection", False
        G = build_conditional_generator(cfg.model.g, cfg.model, info, self.cfg.shared_dim, self.cfg.hierarchical)
        D = build_conditional_discriminator("model.d", cfg.model.d, cfg.model, info, "projection")
        if cfg.model.d.spectral_norm:  # BigGAN normalises D's class embedding too (G's shared one is not)
            spectral_norm(D.embed, n_power_iterations=cfg.model.d.sn_iters)
        self.nets = {"G": finish_net(G, "model.g", cfg.model.g), "D": D}
        self.players = {GENERATOR: ("G",), DISCRIMINATOR: ("D",)}

    def phases(self) -> list[Phase]:
        return [Phase("D", DISCRIMINATOR, self.d_loss, repeats=self.cfg.n_critic),
                Phase("G", GENERATOR, self.g_loss, uses_data=False)]

    def ortho_weights(self) -> list[Tensor]:
        """G's weights under the orthogonal regularisation: every matrix or filter bank (raw, before
        spectral normalisation), except the shared class embedding (as BigGAN-PyTorch)."""
        G = unwrapped(self.nets["G"])
        return [p for name, p in G.named_parameters() if p.dim() >= 2 and not name.startswith("shared.")]

    def g_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        terms = super().g_loss(batch, ctx)
        if self.cfg.ortho_weight:
            # A term of every micro-batch's loss: the trainer averages micro-batches, so it counts once a step.
            terms["ortho"] = self.cfg.ortho_weight * sum(orthogonal_penalty(w.float()) for w in self.ortho_weights())
        return terms
