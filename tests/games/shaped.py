"""Test-only games shaped like the variants the contract must carry (no user-facing variant):

- `CycleShaped`: four nets, two generators and two discriminators in two optimizer groups; the
  D phase reuses the fakes the G phase generated, through an image history in the game's state;
  samples translate input images (A -> B).
- `VAEShaped`: encoder and decoder stepped by different losses and learning rates (their own
  optimizer groups); reconstruction measured in D's hidden features (named outputs); later
  phases reuse the encoder phase's batch and latent codes.
- `InfoShaped`: a Q head on D's features, trained in both players' phases with the
  mutual-information term; conditional sampling of its categorical code.

Run them with `game.name=tests.games.shaped:CycleShaped` (and so on) on `data.name=digits`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from distgan import losses
from distgan.config import GameConfig
from distgan.games import DISCRIMINATOR, GENERATOR, Conditions, Game, Phase, Samples, pick
from distgan.games.history import ImageHistory
from distgan.models import build_net

# ----------------------------------------------------------------------------- cycle-shaped


def _to_b(a: torch.Tensor) -> torch.Tensor:
    """Domain B of a digit: its negative, mirrored."""
    return -a.flip(-1)


class _Translator(nn.Module):
    """A small image -> image net (tanh output)."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(width, channels, 3, padding=1), nn.Tanh())

    def forward(self, x):
        return self.net(x)


@dataclass
class CycleConfig(GameConfig):
    name: str = "tests.games.shaped:CycleShaped"
    cycle_weight: float = 10.0
    history: int = 8  # fakes kept per discriminator


class CycleShaped(Game):
    Config = CycleConfig
    ema_nets = ("G_AB",)
    image_input = True

    def __init__(self, cfg, info):
        super().__init__()
        self.cfg = cfg.game
        c = info.shape[0]
        self.nets = {
            "G_AB": _Translator(c, cfg.model.g.width), "G_BA": _Translator(c, cfg.model.g.width),
            "D_A": build_net(DISCRIMINATOR, "model.d", cfg.model.d, cfg.model, info),
            "D_B": build_net(DISCRIMINATOR, "model.d", cfg.model.d, cfg.model, info),
        }
        self.players = {GENERATOR: ("G_AB", "G_BA"), DISCRIMINATOR: ("D_A", "D_B")}
        self.history = {"A": ImageHistory(self.cfg.history), "B": ImageHistory(self.cfg.history)}

    def phases(self):
        return [Phase("G", GENERATOR, self.g_loss), Phase("D", DISCRIMINATOR, self.d_loss, reuses="G")]

    def g_loss(self, batch, ctx):
        n = self.nets
        a, b = batch.x, _to_b(batch.x)
        fake_b, fake_a = n["G_AB"](a), n["G_BA"](b)
        ctx.memo.update(fake_a=fake_a.detach(), fake_b=fake_b.detach())
        cycle = (n["G_BA"](fake_b) - a).abs().mean() + (n["G_AB"](fake_a) - b).abs().mean()
        return {"adv": losses.g_least_squares(n["D_B"](fake_b)) + losses.g_least_squares(n["D_A"](fake_a)),
                "cycle": self.cfg.cycle_weight * cycle}

    def d_loss(self, batch, ctx):
        n, terms = self.nets, {}
        for domain, real in (("A", batch.x), ("B", _to_b(batch.x))):
            fakes = ctx.gather(ctx.memo[f"fake_{domain.lower()}"])  # (B_global, C, H, W)
            pooled = self.history[domain].query(fakes, ctx.global_rand(), ctx.global_rand())
            parts = losses.d_least_squares(n[f"D_{domain}"](real), n[f"D_{domain}"](ctx.mine(pooled)))
            terms[domain] = parts["real"] + parts["fake"]
        return terms

    def state_dict(self):
        return {domain: h.state_dict() for domain, h in self.history.items()}

    def load_state_dict(self, state):
        for domain, h in self.history.items():
            h.load_state_dict(state[domain])

    def sample(self, nets, ctx, conditions: Optional[Conditions] = None):
        return Samples(nets["G_AB"](conditions.images), inputs=conditions.images)


# ----------------------------------------------------------------------------- VAE-shaped


class _Encoder(nn.Module):
    def __init__(self, in_dim: int, width: int, z_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, width), nn.LeakyReLU(0.2), nn.Linear(width, 2 * z_dim))

    def forward(self, x):
        mu, logvar = self.net(x).chunk(2, dim=1)
        return mu, logvar


@dataclass
class VAEConfig(GameConfig):
    name: str = "tests.games.shaped:VAEShaped"
    gamma: float = 1e-2  # weight of the feature reconstruction in the decoder's loss
    optimizer_groups = ("enc", "dec", "d")


class VAEShaped(Game):
    Config = VAEConfig

    def __init__(self, cfg, info):
        super().__init__()
        self.cfg, self.z_dim = cfg.game, cfg.model.z_dim
        self.nets = {
            "E": _Encoder(info.shape[0] * info.shape[1] * info.shape[2], 4 * cfg.model.g.width, self.z_dim),
            "G": build_net(GENERATOR, "model.g", cfg.model.g, cfg.model, info),
            "D": build_net(DISCRIMINATOR, "model.d", cfg.model.d, cfg.model, info),
        }
        self.players = {GENERATOR: ("E", "G"), DISCRIMINATOR: ("D",)}

    @property
    def optimizer_groups(self):
        return {"enc": ("E",), "dec": ("G",), "d": ("D",)}

    def phases(self):
        return [Phase("E", GENERATOR, self.e_loss, trains=("E",)),
                Phase("Dec", GENERATOR, self.dec_loss, trains=("G",), reuses="E"),
                Phase("D", DISCRIMINATOR, self.d_loss, reuses="E")]

    def _similarity(self, x, x_rec):
        """Reconstruction error in D's hidden features (the learned similarity)."""
        D = self.nets["D"]
        return (pick(D(x_rec, outputs=("features",)), "features")
                - pick(D(x, outputs=("features",)), "features").detach()).pow(2).mean()

    def e_loss(self, batch, ctx):
        mu, logvar = self.nets["E"](batch.x)
        z = mu + (0.5 * logvar).exp() * ctx.randn(self.z_dim)
        ctx.memo["z"] = z.detach()
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()
        return {"kl": kl, "similarity": self._similarity(batch.x, self.nets["G"](z))}

    def dec_loss(self, batch, ctx):
        G, D = self.nets["G"], self.nets["D"]
        rec, prior = G(ctx.memo["z"]), G(ctx.randn(self.z_dim))
        return {"similarity": self.cfg.gamma * self._similarity(batch.x, rec),
                "adv": losses.g_nonsaturating(D(rec)) + losses.g_nonsaturating(D(prior))}

    def d_loss(self, batch, ctx):
        G, D = self.nets["G"], self.nets["D"]
        with torch.no_grad():
            rec, prior = G(ctx.memo["z"]), G(ctx.randn(self.z_dim))
        real = losses.d_cross_entropy(D(batch.x), D(rec))
        return {"real": real["real"], "fake": real["fake"] + F.softplus(D(prior)).mean()}

    def sample(self, nets, ctx, conditions=None):
        return Samples(nets["G"](ctx.randn(self.z_dim)))


# ----------------------------------------------------------------------------- InfoGAN-shaped


@dataclass
class InfoConfig(GameConfig):
    name: str = "tests.games.shaped:InfoShaped"
    categories: int = 10
    continuous: int = 2
    info_weight: float = 1.0
    optimizer_groups = ("g", "d", "q")


class InfoShaped(Game):
    Config = InfoConfig
    conditional = True  # samples can be asked for a categorical code (as labels)

    def __init__(self, cfg, info):
        super().__init__()
        self.cfg, self.z_dim = cfg.game, cfg.model.z_dim
        k, c = self.cfg.categories, self.cfg.continuous
        noise = self.z_dim - k - c
        if noise <= 0:
            raise ValueError(f"model.z_dim={self.z_dim} must exceed the {k + c} code dimensions")
        D = build_net(DISCRIMINATOR, "model.d", cfg.model.d, cfg.model, info)
        features = D(torch.zeros(1, *info.shape), outputs=("features",))["features"].shape[1]
        self.nets = {"G": build_net(GENERATOR, "model.g", cfg.model.g, cfg.model, info), "D": D,
                     "Q": nn.Sequential(nn.Linear(features, 32), nn.LeakyReLU(0.2), nn.Linear(32, k + c))}
        self.players = {GENERATOR: ("G",), DISCRIMINATOR: ("D", "Q")}
        self.noise = noise

    @property
    def optimizer_groups(self):
        return {"g": ("G",), "d": ("D",), "q": ("Q",)}

    def phases(self):
        return [Phase("D", DISCRIMINATOR, self.d_loss),  # trains D and Q (the player's nets)
                Phase("G", GENERATOR, self.g_loss, trains=("G", "Q"), uses_data=False)]

    def _latent(self, ctx, labels=None):
        k, c = self.cfg.categories, self.cfg.continuous
        noise = ctx.randn(self.noise)
        drawn = ctx.randint(k)
        cat = drawn if labels is None else labels
        cont = ctx.rand(c) * 2 - 1
        return torch.cat([noise, F.one_hot(cat, k).float(), cont], 1), cat, cont

    def _information(self, features, cat, cont):
        """-I lower bound: categorical cross-entropy + fixed-variance Gaussian NLL of the codes."""
        q = self.nets["Q"](features)
        k = self.cfg.categories
        return self.cfg.info_weight * (F.cross_entropy(q[:, :k], cat) + 0.5 * (q[:, k:] - cont).pow(2).sum(1).mean())

    def d_loss(self, batch, ctx):
        G, D = self.nets["G"], self.nets["D"]
        z, cat, cont = self._latent(ctx)
        with torch.no_grad():
            fake = G(z)
        fake_out = D(fake, outputs=("logits", "features"))
        terms = losses.d_cross_entropy(D(batch.x), fake_out["logits"])
        terms["info"] = self._information(fake_out["features"], cat, cont)
        return terms

    def g_loss(self, batch, ctx):
        z, cat, cont = self._latent(ctx)
        out = self.nets["D"](self.nets["G"](z), outputs=("logits", "features"))
        return {"adv": losses.g_nonsaturating(out["logits"]), "info": self._information(out["features"], cat, cont)}

    def sample(self, nets, ctx, conditions=None):
        labels = None if conditions is None else conditions.labels
        z, cat, cont = self._latent(ctx, labels)
        return Samples(nets["G"](z), labels=cat, codes={"cont": cont})


# ----------------------------------------------------------------------------- a broken game


class UntouchedR1(Game):
    """Lazy R1 written without `touch`: its phase leaves D's last bias without a gradient,
    which the trainer must report by name (DDP would fail a step later, without one)."""

    Config = GameConfig

    def __init__(self, cfg, info):
        super().__init__()
        self.z_dim = cfg.model.z_dim
        self.nets = {"G": build_net(GENERATOR, "model.g", cfg.model.g, cfg.model, info),
                     "D": build_net(DISCRIMINATOR, "model.d", cfg.model.d, cfg.model, info)}
        self.players = {GENERATOR: ("G",), DISCRIMINATOR: ("D",)}

    def phases(self):
        return [Phase("D_reg", DISCRIMINATOR, self.r1_only)]

    def r1_only(self, batch, ctx):
        real = batch.x.detach().requires_grad_(True)
        return {"r1": losses.r1_penalty(ctx.input_grad(self.nets["D"](real), real))}
