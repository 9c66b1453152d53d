"""Image-to-image translation: pix2pix (paired) and the cycle family (unpaired).

- `pix2pix` (Isola et al. 2017): G(x) = y from paired data (batch.x, batch.x_b); D judges
  (input, output) pairs joined along channels, patch by patch (a PatchGAN); G's loss is the
  adversarial term plus `l1_weight` (100) x L1 to the true target. `game.direction` picks
  which side of the pair is the input (AB: batch.x -> batch.x_b).
- `cyclegan` (Zhu et al. 2017): G_AB and G_BA on unpaired domains A (batch.x) and B
  (batch.x_b); D_A and D_B judge each domain. G's loss: adversarial (least squares) +
  `cycle_weight` x |G_BA(G_AB(a)) - a| (and for b) + `identity_weight` x cycle_weight x
  |G_AB(b) - b| (and for a). D sees its domain's fakes through a history of `history` (50)
  earlier fakes (distgan.games.history), kept in the game's state. DualGAN (WGAN critic with
  weight clipping, L1 reconstruction) and DiscoGAN (encoder-decoder nets, cross-entropy loss,
  L2 reconstruction) are configs of this game: `game.loss`, `game.clip`, `game.cycle_distance`.

Both generate in their G phase and their D phase reuses those fakes (`Phase.reuses`), so one
step runs each generator forward once. Sampling translates `Conditions.images` in the run's
direction (`set_direction` for the other way round, where the game has both generators).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping, Optional

import torch
from torch import Tensor, nn

from distgan import losses
from distgan.data.base import Batch, DataInfo
from distgan.errors import ConfigError
from distgan.games.base import (
    DISCRIMINATOR,
    GENERATOR,
    Conditions,
    Game,
    Phase,
    Samples,
    StepContext,
)
from distgan.games.history import ImageHistory
from distgan.models import build_net
from distgan.nn.dropout import dropout_masks
from distgan.sections.games import CycleConfig, Pix2PixConfig

DIRECTIONS = ("AB", "BA")


def _need_two_domains(batch: Batch, game: str) -> None:
    if batch.x_b is None:
        raise ConfigError(f"game.name={game} needs two images per sample (data.name=digits_negative, digits_rotated, "
                          f"digits_edges, or shards packed with --layout paired / unpaired)")


class TranslationGame(Game):
    """What the translation games share: image inputs, a direction, the grid's inputs."""

    image_input = True

    def __init__(self, direction: str):
        super().__init__()
        self.direction = direction

    def input_images(self, batch: Batch) -> Tensor:
        return batch.x if self.direction == "AB" else batch.x_b


# --------------------------------------------------------------------------- pix2pix


class Pix2PixGame(TranslationGame):
    Config = Pix2PixConfig

    def __init__(self, cfg, info: DataInfo):
        super().__init__(cfg.game.direction)
        self.directions = (cfg.game.direction,)  # one generator: the way it was trained
        self.cfg = cfg.game
        self.loss = losses.adversarial(cfg.game.loss)
        c, *side = info.shape
        pair = replace(info, shape=(2 * c, *side))  # D(x, y): input and output joined along channels
        self.nets = {"G": build_net(GENERATOR, "model.g", cfg.model.g, cfg.model, info),
                     "D": build_net(DISCRIMINATOR, "model.d", cfg.model.d, cfg.model, pair)}
        self.players = {GENERATOR: ("G",), DISCRIMINATOR: ("D",)}

    def phases(self) -> list[Phase]:
        return [Phase("G", GENERATOR, self.g_loss), Phase("D", DISCRIMINATOR, self.d_loss, reuses="G")]

    def _source_target(self, batch: Batch) -> tuple[Tensor, Tensor]:
        _need_two_domains(batch, "pix2pix")
        return (batch.x, batch.x_b) if self.direction == "AB" else (batch.x_b, batch.x)

    def g_loss(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        source, target = self._source_target(batch)
        with dropout_masks(ctx.rand, self.nets["G"]):  # the noise: seeded by the step, per global sample
            fake = self.nets["G"](source)  # (B, C, H, W)
        ctx.memo["fake"] = fake.detach()
        logits = self.nets["D"](torch.cat([source, fake], 1))  # (B, patches)
        return {"adv": self.loss.generator(logits), "l1": self.cfg.l1_weight * (fake - target).abs().mean()}

    def d_loss(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        source, target = self._source_target(batch)
        D = self.nets["D"]
        terms = self.loss.discriminator(D(torch.cat([source, target], 1)), D(torch.cat([source, ctx.memo["fake"]], 1)))
        # Halved, as in the paper: D learns more slowly than G.
        return {k: 0.5 * v for k, v in terms.items()}

    def sample(self, nets: Mapping[str, nn.Module], ctx: StepContext,
               conditions: Optional[Conditions] = None) -> Samples:
        with dropout_masks(ctx.rand if self.cfg.sample_dropout else None, nets["G"]):
            return Samples(nets["G"](conditions.images), inputs=conditions.images)


# --------------------------------------------------------------------------- the cycle family


class CycleGame(TranslationGame):
    Config = CycleConfig
    ema_nets = ("G_AB", "G_BA")
    directions = DIRECTIONS  # a generator each way: sample() translates either (set_direction)
    _GENERATOR_OF = {"AB": "G_AB", "BA": "G_BA"}

    def __init__(self, cfg, info: DataInfo):
        super().__init__(cfg.game.direction)
        self.cfg = cfg.game
        self.loss = losses.adversarial(cfg.game.loss)
        g, d, m = cfg.model.g, cfg.model.d, cfg.model
        self.nets = {"G_AB": build_net(GENERATOR, "model.g", g, m, info),
                     "G_BA": build_net(GENERATOR, "model.g", g, m, info),
                     "D_A": build_net(DISCRIMINATOR, "model.d", d, m, info),
                     "D_B": build_net(DISCRIMINATOR, "model.d", d, m, info)}
        self.players = {GENERATOR: ("G_AB", "G_BA"), DISCRIMINATOR: ("D_A", "D_B")}
        self.history = {"A": ImageHistory(self.cfg.history), "B": ImageHistory(self.cfg.history)}

    def phases(self) -> list[Phase]:
        return [Phase("G", GENERATOR, self.g_loss), Phase("D", DISCRIMINATOR, self.d_loss, reuses="G")]

    def _distance(self, x: Tensor, y: Tensor) -> Tensor:
        diff = x - y
        return diff.abs().mean() if self.cfg.cycle_distance == "l1" else diff.pow(2).mean()

    def g_loss(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        _need_two_domains(batch, "cyclegan")
        n, w = self.nets, self.cfg.cycle_weight
        a, b = batch.x, batch.x_b  # unpaired: a and b show different samples
        # Generators with dropout (DiscoGAN's encoder-decoders, a U-Net): masks seeded by the step.
        with dropout_masks(ctx.rand, n["G_AB"], n["G_BA"]):
            fake_b, fake_a = n["G_AB"](a), n["G_BA"](b)  # (B, C, H, W)
            ctx.memo.update(fake_a=fake_a.detach(), fake_b=fake_b.detach())
            terms = {"adv_AB": self.loss.generator(n["D_B"](fake_b)), "adv_BA": self.loss.generator(n["D_A"](fake_a)),
                     "cycle": w * (self._distance(n["G_BA"](fake_b), a) + self._distance(n["G_AB"](fake_a), b))}
            if self.cfg.identity_weight:
                terms["identity"] = self.cfg.identity_weight * w * (self._distance(n["G_AB"](b), b)
                                                                    + self._distance(n["G_BA"](a), a))
        return terms

    def d_loss(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        terms = {}
        for domain, real in (("A", batch.x), ("B", batch.x_b)):
            D = self.nets[f"D_{domain}"]
            # The history is the same on every rank: updated from the global batch of fakes.
            fakes = ctx.gather(ctx.memo[f"fake_{domain.lower()}"])  # (B_global, C, H, W)
            pooled = ctx.mine(self.history[domain].query(fakes, ctx.global_rand(), ctx.global_rand()))
            parts = self.loss.discriminator(D(real), D(pooled))
            # Halved, as CycleGAN's reference code: D learns more slowly than G.
            terms[f"{domain}_real"], terms[f"{domain}_fake"] = 0.5 * parts["real"], 0.5 * parts["fake"]
        return terms

    def after_step(self, phase: Phase) -> None:
        super().after_step(phase)
        if phase.player == DISCRIMINATOR and self.cfg.clip:
            self.clip_weights(DISCRIMINATOR, self.cfg.clip)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "history": {d: h.state_dict() for d, h in self.history.items()}}

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        for domain, saved in state.pop("history").items():
            self.history[domain].load_state_dict(saved)
        super().load_state_dict(state)

    def sample(self, nets: Mapping[str, nn.Module], ctx: StepContext,
               conditions: Optional[Conditions] = None) -> Samples:
        G = nets[self._GENERATOR_OF[self.direction]]
        with dropout_masks(None, G):  # one translation per input
            return Samples(G(conditions.images), inputs=conditions.images)
