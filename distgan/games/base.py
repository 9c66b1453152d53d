"""The game contract the trainer runs (docs/games.md).

A `Game` owns named nets, grouped into two players (the generator player and the
discriminator player) and into optimizer groups (`optim.<group>` in the config),
and defines the `Phase`s of one training step. A phase names the nets it trains
and how its loss terms are formed; the trainer does everything else (freezing
every other net, accumulation, gradient sync, AMP, the non-finite guard, EMA,
checkpoints) without knowing which family it is running.

A game also owns its config section (a `GameConfig` subclass in distgan.sections.games), its
state (`state_dict`, saved in every checkpoint) and its sampling: `sample` takes
optional `Conditions` (labels, codes, input images) and returns `Samples`.

And it answers for its capabilities: which conditions it takes (`check_conditions`,
`check_labels`, `check_codes`, `check_inputs`), whether it encodes (`check_encoder`, `encode`),
which directions it translates (`set_direction`), whether its noise can be truncated
(`set_truncation`). Sampling and the commands ask the game; a game that lacks what a flag asks
for raises a `CapabilityError` naming its variant as the config names it (`variant`, game.name).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Mapping, Optional

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from distgan.augment import Augment
from distgan.data.base import Batch, DataInfo
from distgan.errors import CapabilityError, ConfigError
from distgan.sections.games import GameConfig
from distgan.step_context import StepContext

GENERATOR, DISCRIMINATOR = "generator", "discriminator"


# --------------------------------------------------------------------------- sampling


@dataclass
class Conditions:
    """What a sample is asked to be. Every field is optional and batch-first."""

    labels: Optional[Tensor] = None  # (B,) class indices (conditional games)
    # name -> (B, ...) latent codes (InfoGAN: cat, cont0, ...; Game.latent_codes); "z" (B, z_dim) fixes the
    # noise itself where the game honours it (InfoGAN's code sheets keep it fixed along a row).
    codes: dict[str, Tensor] = field(default_factory=dict)
    images: Optional[Tensor] = None  # (B, C, H, W) inputs of image-to-image games, in [-1, 1]

    def __len__(self) -> int:
        given = [t for t in (self.labels, self.images, *self.codes.values()) if t is not None]
        return len(given[0]) if given else 0

    def rows(self, lo: int, hi: int) -> "Conditions":
        """Samples lo..hi of every field (for generating in blocks)."""
        return Conditions(labels=None if self.labels is None else self.labels[lo:hi],
                          codes={k: v[lo:hi] for k, v in self.codes.items()},
                          images=None if self.images is None else self.images[lo:hi])

    def to(self, device: torch.device) -> "Conditions":
        return Conditions(labels=None if self.labels is None else self.labels.to(device),
                          codes={k: v.to(device) for k, v in self.codes.items()},
                          images=None if self.images is None else self.images.to(device))


@dataclass
class Samples:
    """What `Game.sample` returns: samples in data space and what they were conditioned on."""

    x: Tensor  # (B, *sample_shape)
    labels: Optional[Tensor] = None  # (B,) the class each sample was asked to be
    codes: dict[str, Tensor] = field(default_factory=dict)
    inputs: Optional[Tensor] = None  # (B, C, H, W) the input images of image-to-image games

    def to(self, device: torch.device) -> "Samples":
        return Samples(x=self.x.to(device), labels=None if self.labels is None else self.labels.to(device),
                       codes={k: v.to(device) for k, v in self.codes.items()},
                       inputs=None if self.inputs is None else self.inputs.to(device))


def pick(outputs, name: str = "logits") -> Tensor:
    """One named output of a net that returns either a tensor (its logits) or a mapping of outputs."""
    if isinstance(outputs, Tensor):
        if name != "logits":
            raise KeyError(f"this net returns its logits only, not {name!r}")
        return outputs
    return outputs[name]


def touch(*outputs: Tensor) -> Tensor:
    """A zero that depends on `outputs`: add it to a loss whose value does not depend on some
    parameters that produced them (an R1-only loss leaves D's last bias without a gradient).
    Every trained parameter then gets a gradient (zero), as DDP needs on every rank."""
    return sum(o.float().sum() * 0.0 for o in outputs)


# --------------------------------------------------------------------------- phases and games


@dataclass
class Phase:
    name: str  # metric prefix, e.g. "D" -> loss/D/real
    player: str  # GENERATOR or DISCRIMINATOR: whose loss scaler and post-step hook it uses
    loss: Callable[[Optional[Batch], StepContext], dict[str, Tensor]]  # named terms; the total is their sum
    # Nets whose parameters this phase updates (default: the player's nets). They must make up whole
    # optimizer groups. The loss may call any other net; those are frozen and never updated here.
    trains: tuple[str, ...] = ()
    repeats: int = 1  # optimizer steps per generator step (n_critic for D)
    interval: int = 1  # run only every `interval` generator steps (lazy regularization)
    uses_data: bool = True  # draw a real batch for it
    # Name of an earlier phase of the same step whose real batches and `ctx.memo` (per micro-batch,
    # from its last repeat) this phase gets instead of drawing new ones: e.g. a D step on the fakes
    # the G step generated. That phase must run at every step this one does.
    reuses: str = ""


class Game:
    """Base class: subclasses fill `nets` and `players`, and define `phases`.

    `nets` holds the modules the losses call; the trainer replaces them by their
    distributed wrappers after building (`bind`). `ema_nets` are the nets whose
    exponential moving average is kept and used for sampling. `optimizer_groups`
    maps each `optim.<group>` of the game's config to the nets it steps (default:
    `g` -> the generator player's nets, `d` -> the discriminator player's).
    """

    Config: ClassVar[type[GameConfig]] = GameConfig
    ema_nets: tuple[str, ...] = ("G",)
    # What the game can do (its capabilities), declared here and answered by the methods under
    # "capabilities" below; nothing outside the game reads these to decide what a run can do.
    conditional: ClassVar[bool] = False  # sample() honours Conditions.labels
    image_input: ClassVar[bool] = False  # sample() translates Conditions.images
    # encode() maps data to latent codes, and sample() honours Conditions.codes["z"] (so G(E(x)) is a
    # sample with z = E(x)); `encode_nets` are the nets encode() calls (kept in ema_nets).
    encoder: ClassVar[bool] = False
    encode_nets: tuple[str, ...] = ()
    directions: tuple[str, ...] = ()  # the directions sample() can translate (set_direction)
    truncates: ClassVar[bool] = False  # sample() draws its noise truncated to `truncation` (set_truncation)
    truncation: float = 0.0  # the truncation threshold of sampling (0 = none)
    canvases: ClassVar[bool] = False  # sample() can return each sample's drawing steps (set_canvases)
    show_canvases: bool = False  # sample() returns the drawing steps (DRAW's canvases) side by side
    variant: str = ""  # game.name as the config writes it (set by build_game): what errors call the run
    info: Optional[DataInfo] = None  # the data the nets were built for (set by build_game)
    augment: Optional[Augment] = None  # the `augment:` section (set by build_game; None = off)

    def __init__(self) -> None:
        self.nets: dict[str, nn.Module] = {}
        self.players: dict[str, tuple[str, ...]] = {}

    @property
    def optimizer_groups(self) -> dict[str, tuple[str, ...]]:
        return {"g": self.players[GENERATOR], "d": self.players[DISCRIMINATOR]}

    def bind(self, nets: Mapping[str, nn.Module]) -> None:
        self.nets = dict(nets)

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def input_images(self, batch: Batch) -> Tensor:
        """Image-input games: the images of a data batch that `sample` takes as inputs (the training
        grid's); batch.x unless the game translates the other way (batch.x_b -> batch.x)."""
        return batch.x

    def d_view(self, x: Tensor, ctx: StepContext) -> Tensor:
        """Images x (B, C, H, W) as D sees them: augmented per the `augment:` section, differentiably.
        A game whose Config sets supports_augment passes every input of D, real or fake, in every
        phase through here, and D's logits of the real batch to `observe_real` (ADA's feedback)."""
        return x if self.augment is None else self.augment(x, ctx)

    def observe_real(self, logits: Tensor, ctx: StepContext) -> None:
        """D's logits of this micro-batch's real images, in its D phase (a collective: every rank calls it)."""
        if self.augment is not None:
            self.augment.observe_real(logits, ctx)

    def after_step(self, phase: Phase) -> None:
        """Called after each optimizer step of `phase` (e.g. weight clipping); overrides call super()."""
        if self.augment is not None and phase.player == DISCRIMINATOR:
            self.augment.after_d_step()

    def clip_weights(self, player: str, clip: float) -> None:
        """Weight clipping (WGAN's critic, DualGAN's): every parameter of `player`'s nets clamped to
        [-clip, clip], in place; for `after_step` of that player's phases."""
        with torch.no_grad():
            for name in self.players[player]:
                for p in self.nets[name].parameters():
                    p.clamp_(-clip, clip)

    def state_dict(self) -> dict:
        """The game's own training state (tensors and plain data), saved in every checkpoint.
        It must be the same on every rank (rank 0's is saved). Overrides extend super()'s."""
        return {} if self.augment is None else {"augment": self.augment.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        if self.augment is not None and "augment" in state:
            self.augment.load_state_dict(state.pop("augment"))
        if state:
            raise ValueError(f"{type(self).__name__} has no state, but the checkpoint holds {sorted(state)}")

    def metrics(self) -> dict[str, Tensor]:
        """Scalars about the nets or the game's state, logged as `game/<name>` with the losses at every
        log step (read on every rank; they must be equal on every rank). Default: the `logged()` values
        of every module of the nets that has that method, e.g. SAGAN's attention gates
        (`game/G/net.9/gate`). Override to add the game's own."""
        out = {}
        for name, net in self.nets.items():
            for path, module in unwrapped(net).named_modules():
                if hasattr(module, "logged"):
                    for key, value in module.logged().items():
                        out[f"{name}/{path}/{key}"] = value
        if self.augment is not None:  # ADA's adapted p (DiffAugment: 1), game/augment/p
            out["augment/p"] = torch.tensor(self.augment.p)
        return out

    # ------------------------------------------------------------------ sampling

    def grid(self, count: int, preview: Optional[Callable[[int], Batch]] = None) -> Optional[tuple[Conditions, int]]:
        """What the training sample grid shows, and the images per row: one row per class for a
        conditional game, input | output pairs of the first inputs of `preview(n)` (the run's data) for
        an image-input game; None: a square of `count` unconditional samples. A game with its own
        picture overrides it (InfoGAN's code sheets)."""
        if self.conditional:
            classes = self.info.num_classes
            per_class = max(1, count // classes)
            return Conditions(labels=torch.arange(classes).repeat_interleave(per_class)), per_class
        if self.image_input:
            pairs = max(1, count // 2)
            return self.data_inputs(preview, pairs), 2 * max(1, int(np.sqrt(pairs)))
        return None

    def check_data_inputs(self, preview: Optional[Callable[[int], Batch]]) -> None:
        """ConfigError when the game translates input images, which its grid (and `distgan sample`
        without --inputs) take from the run's data, and the data has no fixed first samples (`preview`
        is None). Checked when training starts, before the first grid needs them."""
        if self.image_input and preview is None:
            raise ConfigError(f"game.name={self._called()} translates images, but its data has no fixed inputs "
                              f"for the sample grid")

    def data_inputs(self, preview: Optional[Callable[[int], Batch]], num: int) -> Optional[Conditions]:
        """The first `num` inputs of the run's data (`preview(num)`) as the Conditions of a game that
        translates input images; None for a game that generates from noise (preview is not called)."""
        self.check_data_inputs(preview)
        return Conditions(images=self.input_images(preview(num)).cpu()) if self.image_input else None

    # ------------------------------------------------------------------ capabilities

    def lacks(self, flag: str, what: str, capability: str, value: str = "") -> CapabilityError:
        """The error of a game that lacks `capability` (a key of CAPABLE_GAMES) asked for by `flag`
        (with `value`): one line naming the run's variant and the games that have it."""
        asked = f"{flag} {value}" if value else flag
        return CapabilityError(f"{asked}: this run is a {self._called()} (game.name): {what}; "
                               f"{flag} applies to runs of {_games_with(capability)}")

    def _called(self) -> str:
        """What errors call the run: its game.name (a game built by hand, outside build_game: its class)."""
        return self.variant or type(self).__name__

    def check_labels(self, labels: Optional[Tensor] = None, flag: str = "label") -> None:
        """CapabilityError unless sample() honours class labels (a conditional game); ConfigError for
        given (B,) `labels` outside 0..classes-1."""
        if not self.conditional:
            raise self.lacks(flag, "it is unconditional (its samples have no labels)", "labels")
        if labels is None:
            return
        classes = self.info.num_classes
        bad = labels[(labels < 0) | (labels >= classes)]
        if len(bad):
            raise ConfigError(f"{flag} {int(bad[0])}: this run has classes 0..{classes - 1}")

    def latent_codes(self) -> dict[str, int]:
        """The named codes `sample` honours in Conditions.codes (one value per sample): name -> number of
        categories, 0 for a continuous code (InfoGAN: cat -> 10, cont0 -> 0)."""
        return {}

    def check_codes(self, names, flag: str = "code", value: str = "") -> None:
        """CapabilityError unless sample() honours latent codes of these names (`latent_codes`, and "z",
        the noise itself, which every game takes), asked for by `flag` (with `value`)."""
        known = self.latent_codes()
        unknown = [name for name in names if name not in known and name != "z"]
        if unknown and not known:
            raise self.lacks(flag, "it has no latent codes", "codes", value)
        if unknown:
            asked = f"{flag} {value}" if value else flag
            raise ConfigError(f"{asked}: expected NAME=VALUE with NAME a code of this run: this "
                              f"{self._called()} (game.name) has the codes {', '.join(known)}")

    def check_inputs(self, given: bool = True, flag: str = "--inputs") -> None:
        """CapabilityError unless the game takes input images when they are `given` (sample() translates
        Conditions.images), or generates without them when they are not."""
        if given and not self.image_input:
            raise self.lacks(flag, "it generates from noise, not from images", "inputs")
        if not given and self.image_input:
            raise CapabilityError(f"this run is a {self._called()} (game.name): it translates input images: "
                                  f"give them ({flag})")

    def check_conditions(self, conditions: Optional[Conditions], num: int) -> None:
        """ConfigError (CapabilityError) for conditions this game cannot take, or of the wrong size."""
        self.check_inputs(conditions is not None and conditions.images is not None, "input images")
        if conditions is None:
            return
        if conditions.labels is not None:
            self.check_labels(conditions.labels)
        self.check_codes(conditions.codes)
        for name, t in (("labels", conditions.labels), ("images", conditions.images), *conditions.codes.items()):
            if t is not None and len(t) != num:
                raise ConfigError(f"{len(t)} {name} given for {num} samples")

    def check_encoder(self, flag: str = "encode") -> None:
        """CapabilityError unless the game has an encoder (`encode`)."""
        if not self.encoder:
            raise self.lacks(flag, "it has no encoder", "encoder")

    def encode(self, nets: Mapping[str, nn.Module], x: Tensor) -> Tensor:
        """(B, *sample_shape) data -> (B, z_dim) latent codes, deterministically (games with `encoder`)."""
        self.check_encoder()
        raise NotImplementedError(f"{type(self).__name__} declares an encoder but defines no encode()")

    def set_direction(self, direction: str, flag: str = "--direction") -> None:
        """Translate `direction` (AB or BA) from now on; CapabilityError unless it is one of `directions`."""
        if direction not in self.directions:
            what = ("it has one direction" if not self.directions
                    else f"it translates {self.directions[0]} only (one generator)" if len(self.directions) == 1
                    else f"it translates {' and '.join(self.directions)}")
            raise self.lacks(flag, what, "directions", direction)
        self.direction = direction

    def set_truncation(self, threshold: float, flag: str = "truncation") -> None:
        """Sample with the noise truncated to [-threshold, threshold] (BigGAN's truncation trick) from now
        on, 0 = none; CapabilityError for a threshold > 0 unless the game `truncates`."""
        if threshold < 0:
            raise ConfigError(f"{flag} must be >= 0 (0 = none), got {threshold}")
        if threshold and not self.truncates:
            raise self.lacks(flag, "its noise is not truncated", "truncation", f"{threshold:g}")
        self.truncation = threshold

    def set_canvases(self, on: bool, flag: str = "--canvases") -> None:
        """Sample each image as its drawing steps side by side, (B, C, H, steps * W), from now on (DRAW's
        canvases); CapabilityError when `on` unless the game draws in steps (`canvases`)."""
        if on and not self.canvases:
            raise self.lacks(flag, "it generates each image at once, not in steps", "canvases")
        self.show_canvases = on

    def sample(self, nets: Mapping[str, nn.Module], ctx: StepContext,
               conditions: Optional[Conditions] = None) -> Samples:
        """Generate ctx.local_batch samples in data space with the given nets; what `conditions`
        leaves open (labels, codes) the game draws from `ctx`."""
        raise NotImplementedError


def unwrapped(net: nn.Module) -> nn.Module:
    """The net itself, under its DDP wrapper if it has one (its own attributes and buffers)."""
    return net.module if isinstance(net, DistributedDataParallel) else net


# The Gaussian posterior's log-variance, clamped: sigma in [0.0025, 7.4].
LOGVAR_RANGE = (-12.0, 4.0)


class EncoderGame(Game):
    """What the games with an encoder share (BiGAN, VAE-GAN): E maps data to G's noise z, and a
    sample's noise may be given (Conditions.codes["z"] = E(x): G(E(x)) reconstructs x)."""

    encoder = True
    ema_nets = ("G", "E")
    encode_nets = ("E",)
    z_dim: int
    gaussian_posterior = False  # E outputs (mean, log-variance) of q(z|x), not z itself

    def _code(self, E: nn.Module, x: Tensor, ctx: Optional[StepContext]) -> Tensor:
        """E's code of x, (B, z_dim): E(x), or a draw from the Gaussian posterior (its mean without `ctx`)."""
        h = E(x)
        if not self.gaussian_posterior:
            return h
        mu, logvar = h.chunk(2, dim=1)
        if ctx is None:
            return mu
        return mu + (0.5 * logvar.clamp(*LOGVAR_RANGE)).exp() * ctx.randn(self.z_dim)

    def sample(self, nets: Mapping[str, nn.Module], ctx: StepContext,
               conditions: Optional[Conditions] = None) -> Samples:
        z = ctx.randn(self.z_dim)  # (B, z_dim), drawn even when given: later draws do not depend on it
        if conditions is not None and "z" in conditions.codes:  # G(E(x)): z = E(x)
            z = conditions.codes["z"].to(z)
        return Samples(nets["G"](z))


# Which registered games have each capability, for the errors of the games that lack it
# (tests/unit/test_games_base.py keeps these in step with distgan.games.GAMES), and what else the
# error names: the configs of a game that have their own names.
CAPABLE_GAMES: dict[str, tuple[str, ...]] = {
    "labels": ("cgan", "acgan", "biggan"),
    "codes": ("infogan",),
    "inputs": ("pix2pix", "cyclegan", "context_encoder", "pix2pixhd"),
    "encoder": ("bigan", "vaegan", "draw", "aae"),
    "directions": ("cyclegan",),
    "truncation": ("biggan",),
    "canvases": ("draw",),
}
_ALSO_KNOWN_AS = {"directions": "CycleGAN, DualGAN, DiscoGAN"}


def _games_with(capability: str) -> str:
    names = CAPABLE_GAMES[capability]
    also = f": {_ALSO_KNOWN_AS[capability]}" if capability in _ALSO_KNOWN_AS else ""
    if len(names) == 1:
        return f"the {names[0]} game{also}"
    return f"the {', '.join(names[:-1])} and {names[-1]} games{also}"
