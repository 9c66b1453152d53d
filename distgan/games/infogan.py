"""InfoGAN (Chen et al. 2016): G(z, c) with latent codes c that a Q head, sharing D's trunk, must
recover from the samples; no labels are used.

The codes are one categorical code `cat` (game.categories classes, uniform) and
game.continuous codes `cont0`, `cont1`, ... (uniform in [-1, 1]), fed to G next to the noise z
(model.z_dim). Q reads D's last hidden features. The mutual-information lower bound, as a loss
(cross-entropy of `cat` + Gaussian negative log-likelihood of the continuous codes, with a fixed
unit or a learned variance), weighted by game.info_weight, is trained in both phases as in the
paper: with D's loss it updates D's trunk and Q, with G's loss it updates G and Q.

The training sample grid is a sheet per continuous code: one row per categorical value, the code
swept from -2 to 2 along the row, the other codes at 0 and the noise fixed per row.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distgan import losses
from distgan.data.base import Batch, DataInfo
from distgan.games.base import DISCRIMINATOR, GENERATOR, Conditions, Game, Phase, Samples, StepContext
from distgan.models import build_net
from distgan.models.conditional import feature_size
from distgan.sections.games import InfoGANConfig

SWEEP = (-2.0, 2.0)  # continuous codes on the sheets: beyond the [-1, 1] trained on (the paper's Fig. 2)
SWEEP_STEPS = 10
_STREAM_SHEET = 0x1F06A


def q_head(features: int, width: int, out: int, norm: str) -> nn.Sequential:
    """Q on D's features: one hidden layer of `width` units, with a BatchNorm of its own for
    norm="batch" (its statistics are Q's: D's trunk and G keep theirs)."""
    hidden = [nn.Linear(features, width, bias=norm == "none")]
    if norm == "batch":
        hidden.append(nn.BatchNorm1d(width))
    return nn.Sequential(*hidden, nn.LeakyReLU(0.2), nn.Linear(width, out))


class InfoGANGame(Game):
    Config = InfoGANConfig

    def __init__(self, cfg, info: DataInfo):
        super().__init__()
        self.cfg, self.z_dim = cfg.game, cfg.model.z_dim
        k, c = self.cfg.categories, self.cfg.continuous
        g_model = dataclasses.replace(cfg.model, z_dim=self.z_dim + k + c)
        D = build_net(DISCRIMINATOR, "model.d", cfg.model.d, cfg.model, info)
        q_out = k + c * (2 if self.cfg.variance == "learned" else 1)
        self.nets = {
            "G": build_net(GENERATOR, "model.g", cfg.model.g, g_model, info),
            "D": D,
            "Q": q_head(feature_size(D, info.shape), self.cfg.q_width, q_out, self.cfg.q_norm),
        }
        self.players = {GENERATOR: ("G",), DISCRIMINATOR: ("D", "Q")}

    @property
    def optimizer_groups(self) -> dict[str, tuple[str, ...]]:
        return {"g": ("G",), "d": ("D",), "q": ("Q",)}

    def latent_codes(self) -> dict[str, int]:
        codes = {"cat": self.cfg.categories} if self.cfg.categories else {}
        return {**codes, **{f"cont{i}": 0 for i in range(self.cfg.continuous)}}

    def phases(self) -> list[Phase]:
        return [Phase("D", DISCRIMINATOR, self.d_loss),  # trains D and Q (the player's nets)
                Phase("G", GENERATOR, self.g_loss, trains=("G", "Q"), uses_data=False)]

    # ------------------------------------------------------------------ codes

    def _latent(self, ctx: StepContext, given: Optional[dict[str, Tensor]] = None):
        """G's input (B, z + k + c) and the codes {"cat": (B,), "cont": (B, c)}. Every draw is made
        whether or not a code is given, so the others do not depend on it."""
        given = given or {}
        k, c = self.cfg.categories, self.cfg.continuous
        z = ctx.randn(self.z_dim)
        cat = ctx.randint(max(k, 1))
        cont = ctx.rand(c) * 2 - 1  # (B, c)
        z = given.get("z", z)
        cat = given.get("cat", cat).long()
        cont = torch.stack([given[f"cont{i}"].to(cont) if f"cont{i}" in given else cont[:, i]
                            for i in range(c)], 1) if c else cont
        parts = [z] + ([F.one_hot(cat, k).to(z.dtype)] if k else []) + [cont.to(z.dtype)]
        return torch.cat(parts, 1), {"cat": cat, "cont": cont}

    def information(self, features: Tensor, codes: dict[str, Tensor]) -> dict[str, Tensor]:
        """The negative mutual-information bound, per code kind, weighted by info_weight."""
        q = self.nets["Q"](features)  # (B, k + c [+ c])
        k, c, w = self.cfg.categories, self.cfg.continuous, self.cfg.info_weight
        terms = {}
        if k:
            terms["info_cat"] = w * losses.categorical_information(q[:, :k], codes["cat"])
        if c:
            logvar = q[:, k + c :] if self.cfg.variance == "learned" else None
            cont = losses.gaussian_information(q[:, k : k + c], codes["cont"], logvar)
            terms["info_cont"] = w * self.cfg.continuous_weight * cont
        return terms

    # ------------------------------------------------------------------ losses

    def d_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        G, D = self.nets["G"], self.nets["D"]
        z, codes = self._latent(ctx)
        with torch.no_grad():
            fake = G(z)
        fake_out = D(self.d_view(fake, ctx), outputs=("logits", "features"))
        real_logits = D(self.d_view(batch.x, ctx))
        self.observe_real(real_logits, ctx)
        terms = losses.d_cross_entropy(real_logits, fake_out["logits"])
        return {**terms, **self.information(fake_out["features"], codes)}

    def g_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        z, codes = self._latent(ctx)
        out = self.nets["D"](self.d_view(self.nets["G"](z), ctx), outputs=("logits", "features"))
        return {"adv": losses.g_nonsaturating(out["logits"]), **self.information(out["features"], codes)}

    # ------------------------------------------------------------------ sampling

    def sample(self, nets: Mapping[str, nn.Module], ctx: StepContext,
               conditions: Optional[Conditions] = None) -> Samples:
        z, codes = self._latent(ctx, None if conditions is None else conditions.codes)
        named = {"cat": codes["cat"]} if self.cfg.categories else {}
        named.update({f"cont{i}": codes["cont"][:, i] for i in range(self.cfg.continuous)})
        return Samples(nets["G"](z), codes=named)

    def grid(self, count: int, preview=None) -> Optional[tuple[Conditions, int]]:
        """A sheet per continuous code (rows: categorical value, columns: the code swept over SWEEP,
        the other codes 0, the noise fixed per row), stacked; a square of samples without one."""
        c = self.cfg.continuous
        if not c:
            return None
        rows = max(self.cfg.categories, 1)
        cols = SWEEP_STEPS
        gen = torch.Generator().manual_seed(_STREAM_SHEET)
        noise = torch.randn(rows, self.z_dim, generator=gen).repeat_interleave(cols, 0)  # (rows * cols, z)
        sweep = torch.linspace(*SWEEP, cols).repeat(rows)  # (rows * cols,)
        zeros = torch.zeros(rows * cols)
        sheets = []
        for i in range(c):
            codes = {"z": noise, **{f"cont{j}": sweep if j == i else zeros for j in range(c)}}
            if self.cfg.categories:
                codes["cat"] = torch.arange(rows).repeat_interleave(cols)
            sheets.append(codes)
        return Conditions(codes={k: torch.cat([s[k] for s in sheets]) for k in sheets[0]}), cols
