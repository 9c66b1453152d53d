"""The game contract the trainer runs (docs/games.md).

A `Game` owns named nets, grouped into two players (the generator player and the
discriminator player) and into optimizer groups (`optim.<group>` in the config),
and defines the `Phase`s of one training step. A phase names the nets it trains
and how its loss terms are formed; the trainer does everything else (freezing
every other net, accumulation, gradient sync, AMP, the non-finite guard, EMA,
checkpoints) without knowing which family it is running.

A game also owns its config section (a `GameConfig` subclass next to it), its
state (`state_dict`, saved in every checkpoint) and its sampling: `sample` takes
optional `Conditions` (labels, codes, input images) and returns `Samples`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Mapping, Optional

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from distgan.augment import Augment
from distgan.config import GameConfig
from distgan.data.base import Batch, DataInfo, derive_seed, to_device

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


def truncate(z: Tensor, threshold: float, gen: torch.Generator) -> Tensor:
    """BigGAN's truncation trick: values of the standard normal `z` with |v| > threshold are redrawn
    from `gen` until none is left (so each is a normal truncated to [-threshold, threshold])."""
    z = z.clone()
    outside = z.abs() > threshold
    while outside.any():
        z[outside] = torch.randn(int(outside.sum()), generator=gen, dtype=z.dtype)
        outside = z.abs() > threshold
    return z


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


# --------------------------------------------------------------------------- one micro-batch


class StepContext:
    """Randomness, shared results and collectives for one micro-batch of one phase.

    Every random draw is made for the whole optimizer step, i.e. the *global*
    batch of all ranks and micro-batches (`total` samples), from a generator
    seeded by the step coordinates; this micro-batch on this rank keeps the
    `local_batch` samples starting at `offset`. So P processes x batch B x
    accumulation A draw exactly what 1 process x batch P*A*B draws, and a resumed
    run draws what the uninterrupted one did.

    `memo` is this micro-batch's scratch space: what a phase stores there is given to
    a later phase of the same step that reuses it (`Phase.reuses`).
    """

    def __init__(self, seed_parts: tuple[int, ...], *, total: int, offset: int, local_batch: int,
                 device: torch.device, grad_scale: Optional[Callable[[], float]] = None,
                 all_gather: Optional[Callable[[Tensor], Tensor]] = None, memo: Optional[dict] = None,
                 micro_global: Optional[tuple[int, int]] = None, truncation: float = 0.0):
        self._gen = torch.Generator().manual_seed(derive_seed(*seed_parts))
        # Sampling only (distgan.sampling): the truncation trick (BigGAN), normal draws beyond it redrawn.
        self.truncation = truncation
        self.total, self.local_batch = total, local_batch
        self._lo = offset
        self.device = device
        self._grad_scale = grad_scale
        self._all_gather = all_gather
        self.memo: dict = {} if memo is None else memo
        # (start, size) of this micro-batch's global batch within the `total` draws.
        self._micro = micro_global or (0, total)

    def _slice(self, full: Tensor) -> Tensor:
        return to_device(full[self._lo : self._lo + self.local_batch], self.device)

    def randn(self, *shape: int) -> Tensor:
        """(B_local, *shape) standard normal; with `truncation` t > 0, every value with |v| > t is
        redrawn until none is (a normal truncated to [-t, t], from the same seeded stream)."""
        full = torch.randn(self.total, *shape, generator=self._gen)
        if self.truncation > 0:
            full = truncate(full, self.truncation, self._gen)
        return self._slice(full)

    def rand(self, *shape: int) -> Tensor:
        """(B_local, *shape) uniform in [0, 1)."""
        return self._slice(torch.rand(self.total, *shape, generator=self._gen))

    def randint(self, high: int, *shape: int) -> Tensor:
        """(B_local, *shape) integers in [0, high)."""
        return self._slice(torch.randint(high, (self.total, *shape), generator=self._gen))

    def global_rand(self, *shape: int) -> Tensor:
        """(B_global, *shape) uniform in [0, 1) for this micro-batch's *global* batch, the same on
        every rank: for decisions about gathered samples (e.g. an image history)."""
        lo, n = self._micro
        return to_device(torch.rand(self.total, *shape, generator=self._gen)[lo : lo + n], self.device)

    def gather(self, local: Tensor) -> Tensor:
        """(B_local, ...) on every rank -> (B_global, ...) of this micro-batch, in rank order
        (no gradient). On one process it is `local` itself."""
        return local if self._all_gather is None else self._all_gather(local.detach().contiguous())

    def mine(self, global_rows: Tensor) -> Tensor:
        """This rank's rows of a (B_global, ...) tensor made by `gather`."""
        lo, _ = self._micro
        start = self._lo - lo
        return global_rows[start : start + self.local_batch]

    def input_grad(self, outputs: Tensor, inputs: Tensor) -> Tensor:
        """d(sum outputs)/d(inputs) with a graph for penalties (GP, R1).

        Under fp16 the outputs are scaled by the phase's loss scale before the
        inner backward (small per-sample gradients underflow otherwise) and the
        result is unscaled, as the PyTorch AMP recipe for gradient penalties does.
        """
        scale = self._grad_scale() if self._grad_scale is not None else 1.0
        (grad,) = torch.autograd.grad(outputs.sum() * scale, inputs, create_graph=True)
        return grad / scale if scale != 1.0 else grad


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
    conditional: ClassVar[bool] = False  # sample() honours Conditions.labels
    image_input: ClassVar[bool] = False  # sample() translates Conditions.images
    # encode() maps data to latent codes, and sample() honours Conditions.codes["z"] (so G(E(x)) is a
    # sample with z = E(x)); `encode_nets` are the nets encode() calls (kept in ema_nets).
    encoder: ClassVar[bool] = False
    encode_nets: tuple[str, ...] = ()
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

    def latent_codes(self) -> dict[str, int]:
        """The named codes `sample` honours in Conditions.codes (one value per sample): name -> number of
        categories, 0 for a continuous code (InfoGAN: cat -> 10, cont0 -> 0)."""
        return {}

    def grid(self, count: int) -> Optional[tuple[Conditions, int]]:
        """What the training sample grid shows when the game has its own picture (InfoGAN's code sheets):
        the conditions of every image and the images per row; None = distgan.sampling's default."""
        return None

    def encode(self, nets: Mapping[str, nn.Module], x: Tensor) -> Tensor:
        """(B, *sample_shape) data -> (B, z_dim) latent codes, deterministically (games with `encoder`)."""
        raise NotImplementedError(f"{type(self).__name__} has no encoder")

    def metrics(self) -> dict[str, Tensor]:
        """Scalars about the nets or the game's state, logged as `game/<name>` with the losses at every
        log step (read on every rank; they must be equal on every rank). Default: the `logged()` values
        of every module of the nets that has that method, e.g. SAGAN's attention gates
        (`game/G/net.9/gate`). Override to add the game's own."""
        out = {}
        for name, net in self.nets.items():
            net = net.module if isinstance(net, DistributedDataParallel) else net
            for path, module in net.named_modules():
                if hasattr(module, "logged"):
                    for key, value in module.logged().items():
                        out[f"{name}/{path}/{key}"] = value
        if self.augment is not None:  # ADA's adapted p (DiffAugment: 1), game/augment/p
            out["augment/p"] = torch.tensor(self.augment.p)
        return out

    def sample(self, nets: Mapping[str, nn.Module], ctx: StepContext,
               conditions: Optional[Conditions] = None) -> Samples:
        """Generate ctx.local_batch samples in data space with the given nets; what `conditions`
        leaves open (labels, codes) the game draws from `ctx`."""
        raise NotImplementedError
