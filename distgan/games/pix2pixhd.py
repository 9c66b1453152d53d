"""Pix2PixHD (Wang et al. 2018): pix2pix at high resolution, on paired data.

- G: a global generator G1 at half the resolution and a local enhancer G2 at the full one
  (distgan.models.pix2pixhd, `model.g.arch: pix2pixhd`). Two stages: for the first `game.local_start`
  generator steps G1 trains alone on the half-resolution pairs (its input and target downsampled, its
  own output head); then G2 joins and both train on the full-resolution pairs, G2 adding G1's last
  features to its own. The stage is a function of the generator steps done (kept in the game's state),
  so a resumed run switches at the same step; a local_start beyond train.steps trains G1 alone, and a
  resume with more train.steps then trains the two together (the paper's order of runs).
- D: `game.scales` PatchGANs of `model.d` on (input, output) pairs, the k-th at the pairs downsampled
  k times (MultiscaleDiscriminator); each scale's adversarial term is added (`game.loss`, least
  squares as the paper).
- G's loss: `adv` + `fm` (`game.fm_weight` x D's feature matching: L1 between D's features of the fake
  and of the real pair, every layer of every scale) + optionally `vgg` (`game.vgg_weight` x the
  perceptual loss of a VGG net whose weights are the user's local file, `game.vgg_file`). No L1 to the
  target: the paper replaces pix2pix's by these two. D's loss: `real` + `fake`, halved as the paper's
  code does.

The D phase reuses the G phase's fakes (`Phase.reuses`), at the stage's resolution. Sampling and
`distgan translate` use the stage the generator was last trained in (its `joint` buffer): G1's
output upsampled during the first stage, G2's after.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping, Optional

import torch
from torch import Tensor, nn

from distgan import losses
from distgan.data.base import Batch, DataInfo
from distgan.errors import ConfigError
from distgan.games.base import DISCRIMINATOR, GENERATOR, Conditions, Phase, Samples, StepContext, unwrapped
from distgan.games.translation import TranslationGame, _need_two_domains
from distgan.models import build_net
from distgan.models.patchgan import patch_grid
from distgan.models.pix2pixhd import MultiscaleDiscriminator, downsample, feature_matching
from distgan.sections.games import Pix2PixHDConfig



class Pix2PixHDGame(TranslationGame):
    Config = Pix2PixHDConfig

    def __init__(self, cfg, info: DataInfo):
        super().__init__(cfg.game.direction)
        self.directions = (cfg.game.direction,)  # one generator: the way it was trained
        self.cfg = cfg.game
        self.loss = losses.adversarial(cfg.game.loss)
        self.local_start = cfg.game.local_start  # generator steps of G1 alone
        self.steps = 0  # generator steps done (the game's state): which stage the next one is in
        c, side = info.shape[0], info.shape[-1]
        d, scales, depth = cfg.model.d, cfg.game.scales, cfg.model.d.depth
        # Each scale's PatchGAN is built for the pairs it sees in the joint stage; the global stage shows
        # every scale pairs of half that side, so the smallest must still leave a patch.
        smallest = side // 2 ** (scales - (0 if self.local_start else 1))
        if side % 2**scales or patch_grid(smallest, depth) < 1:
            raise ConfigError(f"game.scales={scales}, model.d.depth={depth}: the smallest scale of D sees "
                              f"{smallest} px pairs, where a PatchGAN of that depth leaves no patch")
        pair = [replace(info, shape=(2 * c, side // 2**k, side // 2**k)) for k in range(scales)]
        G = build_net(GENERATOR, "model.g", cfg.model.g, cfg.model, info,
                      downsamplings=cfg.game.global_downsamplings, local_blocks=cfg.game.local_blocks)
        self.nets = {"G": G, "D": MultiscaleDiscriminator(
            [build_net(DISCRIMINATOR, "model.d", d, cfg.model, pair[k]) for k in range(scales)])}
        self.players = {GENERATOR: ("G",), DISCRIMINATOR: ("D",)}
        self._vgg = None  # the perceptual net, loaded from game.vgg_file at its first use (training only)

    def phases(self) -> list[Phase]:
        return [Phase("G", GENERATOR, self.g_loss), Phase("D", DISCRIMINATOR, self.d_loss, reuses="G")]

    @property
    def joint(self) -> bool:
        """Whether the next step trains G1 and G2 together (else G1 alone, at half the resolution)."""
        return self.steps >= self.local_start

    def _pair(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(source, target) at the full resolution."""
        _need_two_domains(batch, "pix2pixhd")
        return (batch.x, batch.x_b) if self.direction == "AB" else (batch.x_b, batch.x)

    def _perceptual(self, fake: Tensor, target: Tensor) -> Tensor:
        from distgan.models.perceptual import load_vgg, perceptual_loss

        if self._vgg is None:
            self._vgg = load_vgg(self.cfg.vgg_file, self.info.shape[0] if self.info else fake.shape[1])
        self._vgg = self._vgg.to(fake.device)
        return perceptual_loss(self._vgg, fake, target)

    def g_loss(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        G, D = self.nets["G"], self.nets["D"]
        unwrapped(G).joint.fill_(float(self.joint))  # what sampling shows: the stage trained last
        source, target = self._pair(batch)
        # G1 alone takes the downsampled input and gives (B, C, R/2, R/2): it is judged at that size.
        fake = G(source, stage="joint" if self.joint else "global")  # (B, C, R, R), or R/2
        if not self.joint:
            source, target = downsample(source), downsample(target)
        # The D phase judges these pairs: after this phase's step, self.steps counts it already.
        ctx.memo.update(source=source, target=target, fake=fake.detach())
        judged = D(torch.cat([source, fake], 1), outputs=("logits", "features"))
        terms = {"adv": sum(self.loss.generator(logits) for logits in judged["logits"])}
        if self.cfg.fm_weight:
            with torch.no_grad():  # D is frozen here; the real pair's features are the targets
                real = D(torch.cat([source, target], 1), outputs=("features",))
            terms["fm"] = self.cfg.fm_weight * feature_matching(judged["features"], real["features"])
        if self.cfg.vgg_weight:
            terms["vgg"] = self.cfg.vgg_weight * self._perceptual(fake, target)
        return terms

    def d_loss(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        source, target = ctx.memo["source"], ctx.memo["target"]
        D = self.nets["D"]
        real = D(torch.cat([source, target], 1))["logits"]
        fake = D(torch.cat([source, ctx.memo["fake"]], 1))["logits"]
        terms = [self.loss.discriminator(r, f) for r, f in zip(real, fake)]
        # Summed over the scales; halved, as the paper's code: D learns more slowly than G.
        return {k: 0.5 * sum(t[k] for t in terms) for k in terms[0]}

    def after_step(self, phase: Phase) -> None:
        super().after_step(phase)
        if phase.player == GENERATOR:
            self.steps += 1

    def state_dict(self) -> dict:
        return {**super().state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        self.steps = int(state.pop("steps"))
        super().load_state_dict(state)

    def metrics(self) -> dict[str, Tensor]:
        # game/joint: the stage of the step just done (1: G1 and G2 together, 0: G1 alone).
        return {**super().metrics(), "joint": torch.tensor(float(self.steps > self.local_start))}

    def sample(self, nets: Mapping[str, nn.Module], ctx: StepContext,
               conditions: Optional[Conditions] = None) -> Samples:
        return Samples(nets["G"](conditions.images), inputs=conditions.images)
