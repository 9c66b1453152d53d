"""Typed, strict configuration.

One dataclass per component; YAML files hold only what differs from the defaults
below, and `key.sub=value` overrides come last. Every unknown key, wrong type or
contradictory option raises `ConfigError` naming the dotted key, before anything
runs. The resolved config is plain data (dicts of primitives), so it can be stored
in checkpoints that load with `weights_only=True`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

import yaml

from distgan.errors import ConfigError

__all__ = ["Config", "ConfigError", "GameConfig", "OptimizerConfig", "load_config", "from_dict", "parse_overrides", "dump_yaml"]


# --------------------------------------------------------------------------- components


@dataclass
class RunConfig:
    name: str = "run"  # used for the default run directory runs/<name>
    dir: str = ""  # run directory; empty = runs/<name>


@dataclass
class DataConfig:
    # Built-in: ring | grid (synthetic 2-D), digits (scikit-learn's 8x8 digits),
    # stacked_digits (three digits as the channels of one image: 1,000 modes).
    # digits_negative, digits_rotated, digits_edges: two domains for image-to-image games, A = the
    # digit, B = its negative, its 90-degree rotation or its Sobel edges (batch.x, batch.x_b).
    # `shards` streams WebDataset tars named by `data.shards`.
    name: Literal["ring", "grid", "digits", "stacked_digits", "digits_negative", "digits_rotated", "digits_edges",
                  "shards"] = "digits"
    # Every digit set: which of the 1,797 digits are drawn from -- a fixed, stratified
    # 80/20 split (train: 1,438, test: 359; docs/data.md), or all of them.
    split: Literal["all", "train", "test"] = "all"
    # digits_negative / _rotated / _edges: paired = each digit with its own image in domain B (pix2pix);
    # unpaired = A and B from disjoint halves of the digits, no pair ever seen (CycleGAN, CoGAN).
    pairing: Literal["paired", "unpaired"] = "paired"
    resolution: int = 32  # image side length for image data sets
    # Shards packed by `distgan data pack` (manifest.json beside them): a brace pattern
    # (dir/train-{000000..000127}.tar), a path, several joined by ::, or the folder.
    shards: str = ""
    num_workers: int = 0  # loader worker processes per rank (streamed data; 0 = in the main process)
    # The options below apply to data.name=shards (see docs/data.md).
    shuffle_buffer: int = 1000  # raw samples per worker shuffled within each shard (0 = shard order)
    hflip: bool = False  # random horizontal flip (both images of a pair together)
    # Images whose size differs from data.resolution, or crop_scale > 1: shorter side
    # to resolution * crop_scale, then a center or random crop of resolution.
    crop: Literal["center", "random"] = "center"
    crop_scale: float = 1.0  # e.g. 1.12 with crop=random: pix2pix's 286 -> 256 jitter
    max_skipped_fraction: float = 0.01  # stop when more of the samples read are unusable


@dataclass
class NetConfig:
    # Architecture name from distgan.models (mlp, dcgan).
    arch: str = "dcgan"
    # mlp: hidden units per layer; dcgan: channels of the widest conv layer / 8.
    width: int = 64
    # mlp: number of hidden layers; ignored by dcgan (depth follows the resolution).
    depth: int = 1
    # Normalization inside the net: batch | none, or instance (per sample; the image-to-image nets unet,
    # encoder_decoder, cyclegan_resnet and patchgan only; their depth: U-Net downsamplings, residual
    # blocks, PatchGAN stride-2 layers).
    norm: Literal["batch", "instance", "none"] = "batch"
    # How a conditional game's D sees the class (model.d only; empty = the game's default):
    # concat (label joined to the input: one-hot channels / features), projection (Miyato & Koyama
    # 2018: logit + <embed(y), features>), aux (an auxiliary class head, AC-GAN). docs/games.md.
    conditioning: Literal["", "concat", "projection", "aux"] = ""
    # model.d only. PacGAN (Lin et al. 2018): D judges packs of `packing` samples joined along
    # channels (images) or features (points); the per-process batch must divide by it.
    packing: int = 1
    # model.d only: a minibatch standard deviation feature (Karras et al. 2018) before D's last
    # layer, over groups of 4 consecutive inputs of D.
    minibatch_std: bool = False
    # Spectral normalisation (Miyato et al. 2018) of every conv / linear weight, with sn_iters power
    # iterations per training forward; the u, v vectors are checkpointed, so runs resume exactly.
    spectral_norm: bool = False
    sn_iters: int = 1
    # SAGAN self-attention (gate initialised at 0) after the layer whose feature map has each side listed,
    # e.g. [32] (dcgan and sngan; G: its up-sampling outputs, D: its down-sampling outputs).
    attention_at: list[int] = field(default_factory=list)
    # Weight init: default (the arch's own: DCGAN N(0, 0.02), torch's for sngan) | normal (N(0, 0.02)) |
    # xavier | orthogonal (BigGAN).
    init: Literal["default", "normal", "xavier", "orthogonal"] = "default"


@dataclass
class ModelConfig:
    z_dim: int = 100  # latent size
    g: NetConfig = field(default_factory=NetConfig)
    d: NetConfig = field(default_factory=NetConfig)
    # Encoder x -> z of the games that have one (bigan, vaegan; `GameConfig.has_encoder`): an image or
    # point to a latent code (VAE-GAN: its mean and log-variance). Other games refuse these keys.
    e: NetConfig = field(default_factory=NetConfig)
    # Cross-replica BatchNorm: statistics over the global batch of all ranks.
    sync_bn: bool = False


@dataclass
class AugmentConfig:
    """Augmentation of every image D sees, real and fake, in both players' losses (distgan.augment)."""

    # none | diffaugment (Zhao et al. 2020: every op on every image) | ada (Karras et al. 2020: each op
    # with probability p, adapted so that E[sign(D(real))] stays near `target`)
    name: Literal["none", "diffaugment", "ada"] = "none"
    # Ops, in order (distgan.augment.OPS); empty = the method's own: diffaugment color, translation,
    # cutout; ada xflip, rotate90, xint, scale, rotation, brightness, contrast, saturation.
    policy: list[str] = field(default_factory=list)
    p: float = 0.0  # ada: p at the start; then adapted and kept in the game's checkpointed state
    target: float = 0.6  # ada: the target of r_t = E[sign(D(real))] (the paper's 0.6)
    interval: int = 4  # ada: D steps between adjustments of p
    kimg: float = 500.0  # ada: thousands of real images in which p can move from 0 to 1


@dataclass
class GameConfig:
    """Base of every game's config section (`game:`). Each game subclasses it next to its code
    (`Game.Config`, e.g. distgan.games.gan.AdversarialConfig) with the keys only it reads, so
    adding a variant never grows one shared section; `game.name` picks the class, and keys of
    another game are unknown keys."""

    name: str = "gan"  # a registered game (distgan.games.GAMES) or module.path:GameClass

    # Optimizer groups (`optim.<group>`) this game accepts; the game maps each to its nets.
    optimizer_groups: ClassVar[tuple[str, ...]] = ("g", "d")
    # Whether the game forms model.d.packing packs from its batches (distgan.models.packing).
    supports_packing: ClassVar[bool] = False
    # Whether every input of the game's D goes through Game.d_view (the `augment:` section).
    supports_augment: ClassVar[bool] = False
    # Whether the game builds an encoder from model.e (BiGAN, VAE-GAN); the others refuse model.e keys.
    has_encoder: ClassVar[bool] = False

    def validate(self, cfg: "Config") -> None:
        """Cross-field checks against the whole config; raise ConfigError naming the key."""


def _game_config_class(data: Any) -> type:
    """The config class of the game that `game.name` names (default `gan`)."""
    from distgan.games import game_class

    name = data.get("name", "gan") if isinstance(data, dict) else "gan"
    if not isinstance(name, str):
        raise ConfigError(f"game.name expects a string, got {name!r}")
    return game_class(name).Config


def _default_game_config() -> GameConfig:
    return _game_config_class({})()


@dataclass
class OptimizerConfig:
    name: Literal["adam", "rmsprop", "sgd"] = "adam"
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])  # adam only
    weight_decay: float = 0.0
    # The fused kernel (adam, sgd): one launch per step, and a non-finite step is skipped on the device
    # with no host sync. null = fused on CUDA, foreach on CPU.
    fused: Optional[bool] = None


@dataclass
class TrainConfig:
    steps: int = 2000  # generator steps
    batch_size: int = 64  # per process, per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    # Learning rate of every optimizer group: optim.<group>.lr until this fraction of train.steps, then
    # linearly down to 0 at train.steps (CycleGAN: 0.5, the second half); 1.0 = constant. A function of
    # the step alone, so a resumed run follows it exactly.
    lr_decay_start: float = 1.0
    # auto = bf16 on GPUs that have it, else no; fp16 uses one loss scaler per player.
    precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    seed: int = 0
    resume: str = "auto"  # never | auto | PATH to a checkpoint directory
    ema_decay: float = 0.999  # 0 disables the EMA generator
    ema_start: int = 0  # generator step at which averaging starts (before: copy)
    max_bad_steps: int = 10  # consecutive non-finite steps before the run stops
    # Process-group timeouts: while starting (rendezvous, resume, first batches, the first step), then
    # for every collective of training. A rank that died or hangs stops the others after it.
    startup_timeout_s: int = 1800
    collective_timeout_s: int = 600
    # CUDA: deterministic kernels (cuDNN deterministic, torch.use_deterministic_algorithms, the cuBLAS
    # workspace setting, TF32 off), so N + resume + N steps equal 2N bitwise on a GPU too (docs/gpu.md).
    # Slower; an op without a deterministic kernel then raises an error naming it.
    deterministic: bool = False
    tf32: bool = True  # CUDA: TF32 tensor cores for float32 matmuls and convolutions (off when deterministic)
    # torch.compile of the nets (inductor; on CPU it needs a C++ compiler). The first steps compile.
    compile: bool = False
    channels_last: bool = False  # conv weights (and so activations) in NHWC: faster convs on GPUs


@dataclass
class CheckpointConfig:
    every: int = 1000  # generator steps between checkpoints (0 = only at the end)
    keep: int = 2  # complete checkpoints kept (older ones pruned after a new one lands)


@dataclass
class LogConfig:
    every: int = 50  # generator steps between metric lines
    sample_every: int = 500  # generator steps between sample grids (0 = only at the end)
    sample_count: int = 64  # images per grid / points per scatter
    progress: bool = True  # progress bar on rank 0
    wandb: Literal["disabled", "offline", "online"] = "disabled"
    wandb_project: str = "distgan"
    wandb_entity: str = ""
    wandb_name: str = ""  # empty = run.name
    wandb_group: str = ""


# Metrics `eval.metrics` can name, and the result keys each produces (distgan.metrics.evaluate).
EVAL_METRICS: dict[str, tuple[str, ...]] = {
    "fid": ("fid",),
    "kid": ("kid_mean", "kid_std"),
    "is": ("is_mean", "is_std"),
    "pr": ("precision", "recall", "density", "coverage"),
    "modes": ("modes", "high_quality", "reverse_kl"),
    "class_acc": ("class_acc",),
    "intra_fid": ("intra_fid",),
}
DIGIT_DOMAINS = ("digits_negative", "digits_rotated", "digits_edges")  # two domains: batch.x, batch.x_b
DIGIT_DATA = ("digits", "stacked_digits", *DIGIT_DOMAINS)  # drawn from the built-in digits (data.split)
POINT_DATA = ("ring", "grid")  # 2-D points: only the mode metrics apply
MODE_DATA = POINT_DATA + ("stacked_digits",)  # data with a known, countable set of modes
EVAL_LOWER_IS_BETTER = ("fid", "kid_mean", "reverse_kl", "intra_fid")
EVAL_HIGHER_IS_BETTER = ("is_mean", "precision", "recall", "density", "coverage", "modes", "high_quality",
                         "class_acc")


@dataclass
class EvalConfig:
    """Evaluation of the generator (`distgan eval`, and during training with `every`); docs/evaluation.md."""

    every: int = 0  # generator steps between evaluations during training (0 = never)
    # Any of fid, kid, is, pr (precision/recall/density/coverage), modes (ring/grid/stacked_digits),
    # class_acc and intra_fid (conditional games). Empty = fid,kid,is,pr for images, modes for ring/grid,
    # modes,fid,kid,is,pr for stacked_digits.
    metrics: list[str] = field(default_factory=list)
    num: int = 10000  # generated samples, exactly, on any number of processes (PacGAN Table 1 uses 2500)
    seed: int = 0  # sample i always gets the same z (and label) for a given seed
    # BatchNorm policy of the generator (distgan.sampling): standing | running | train; recorded with results.
    bn: Literal["standing", "running", "train"] = "standing"
    # The truncation trick (BigGAN): noise values with |z| > truncation redrawn when sampling (0 = none).
    truncation: float = 0.0
    # Feature extractor for fid/kid/is/pr: digits (classifier shipped with distgan, for data.name=digits
    # and, channel by channel, stacked_digits),
    # inception (the standard FID InceptionV3, weights from eval.inception_weights), or
    # `module.path:callable` returning an nn.Module that maps (N, C, H, W) images in [-1, 1] to features.
    features: str = "digits"
    inception_weights: str = ""  # local pt_inception-2015-12-05-6726825d.pth (features=inception)
    # Result key that keeps checkpoints/best during training, e.g. fid (lower is better) or is_mean
    # (higher is better); empty = no best checkpoint.
    best: str = ""
    # Reference features of the real data are computed once and cached: for shards next to them
    # (<shards dir>/reference/), else (and for built-in data) here; empty = $DISTGAN_CACHE or ~/.cache/distgan.
    cache_dir: str = ""
    # Real samples in the reference statistics of shard data: the first N in shard order (0 = all).
    # Built-in data use all of digits and a fixed 10,000 stacked digits.
    reference_num: int = 50000


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # The section's class follows game.name (each game owns its keys).
    game: GameConfig = field(default_factory=_default_game_config, metadata={"resolve": _game_config_class})
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # One optimizer per group the game declares (`optim.g`, `optim.d` for the adversarial games);
    # groups left out get the defaults of OptimizerConfig.
    optim: dict[str, OptimizerConfig] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    ckpt: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.dir or f"runs/{self.run.name}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- validation


MINIBATCH_STD_GROUP = 4  # inputs of D per minibatch-std group (Karras et al. 2018)


def _validate_encoder(cfg: Config) -> None:
    if not type(cfg.game).has_encoder:
        default = NetConfig()
        changed = [f.name for f in dataclasses.fields(NetConfig) if getattr(cfg.model.e, f.name) != getattr(default, f.name)]
        if changed:
            raise ConfigError(f"model.e.{changed[0]}: game.name={cfg.game.name} has no encoder (bigan and vaegan do)")
    for key in ("conditioning", "packing", "minibatch_std"):
        if getattr(cfg.model.e, key) != getattr(NetConfig, key):
            raise ConfigError(f"model.e.{key}: an encoder neither packs, adds minibatch statistics nor takes labels")


def _validate_architecture(cfg: Config) -> None:
    """Spectral norm and attention options of model.g / model.d (the sides are checked when the net
    is built, by distgan.models.finish_net)."""
    for side in ("g", "d"):
        net = getattr(cfg.model, side)
        if net.sn_iters < 1:
            raise ConfigError(f"model.{side}.sn_iters must be >= 1, got {net.sn_iters}")
        if net.attention_at and net.arch not in ("dcgan", "sngan"):
            raise ConfigError(f"model.{side}.attention_at: arch {net.arch} has no self-attention (dcgan and sngan do)")
        for r in net.attention_at:
            if r < 4 or r > cfg.data.resolution or r & (r - 1):
                raise ConfigError(f"model.{side}.attention_at: {r} is not a feature-map side (a power of two "
                                  f"between 4 and data.resolution={cfg.data.resolution})")


def _validate_packing(cfg: Config) -> None:
    for key in ("packing", "minibatch_std"):
        if getattr(cfg.model.g, key) != getattr(NetConfig, key):
            raise ConfigError(f"model.g.{key}: only the discriminator packs or adds minibatch statistics (model.d.{key})")
    m = cfg.model.d.packing
    if m < 1:
        raise ConfigError(f"model.d.packing must be >= 1, got {m}")
    if (m > 1 or cfg.model.d.minibatch_std) and cfg.model.d.arch not in ("mlp", "dcgan"):
        raise ConfigError(f"model.d.packing / model.d.minibatch_std: supported for model.d.arch mlp and dcgan, "
                          f"not {cfg.model.d.arch}")
    if m > 1 and not type(cfg.game).supports_packing:
        raise ConfigError(f"model.d.packing: game.name={cfg.game.name} does not form packs (the unconditional gan game does)")
    # Packs and groups are formed within each process's micro-batch, so the global batch is packed
    # exactly as on one process only when they never straddle two processes.
    if cfg.train.batch_size % m:
        raise ConfigError(f"model.d.packing={m} must divide the per-process batch train.batch_size={cfg.train.batch_size}")
    inputs = cfg.train.batch_size // m
    if cfg.model.d.minibatch_std and inputs % MINIBATCH_STD_GROUP:
        raise ConfigError(f"model.d.minibatch_std: D's inputs per process (train.batch_size / model.d.packing = "
                          f"{inputs}) must divide into groups of {MINIBATCH_STD_GROUP}")


def _validate_instance_norm(cfg: Config) -> None:
    from distgan.models import TRANSLATION_ARCHS

    for role in ("g", "d"):
        net = getattr(cfg.model, role)
        if net.norm == "instance" and net.arch not in TRANSLATION_ARCHS:
            raise ConfigError(f"model.{role}.norm=instance: supported by model.{role}.arch "
                              f"{', '.join(TRANSLATION_ARCHS)}, not {net.arch}")


def validate(cfg: Config) -> None:
    """Cross-field checks; each error names the key to change."""
    positive = {
        "train.steps": cfg.train.steps,
        "train.batch_size": cfg.train.batch_size,
        "train.grad_accum": cfg.train.grad_accum,
        "train.max_bad_steps": cfg.train.max_bad_steps,
        "log.every": cfg.log.every,
        "log.sample_count": cfg.log.sample_count,
        "model.z_dim": cfg.model.z_dim,
        "model.g.width": cfg.model.g.width,
        "model.d.width": cfg.model.d.width,
        "model.e.width": cfg.model.e.width,
        "data.resolution": cfg.data.resolution,
        "train.collective_timeout_s": cfg.train.collective_timeout_s,
        "train.startup_timeout_s": cfg.train.startup_timeout_s,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    non_negative = {
        "ckpt.every": cfg.ckpt.every,
        "log.sample_every": cfg.log.sample_every,
        "train.ema_start": cfg.train.ema_start,
        "data.num_workers": cfg.data.num_workers,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    if cfg.ckpt.keep < 1:
        raise ConfigError(f"ckpt.keep must be >= 1, got {cfg.ckpt.keep}")
    if not 0.0 <= cfg.train.lr_decay_start <= 1.0:
        raise ConfigError(f"train.lr_decay_start must be in [0, 1] (a fraction of train.steps), "
                          f"got {cfg.train.lr_decay_start}")
    if not 0.0 <= cfg.train.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay must be in [0, 1), got {cfg.train.ema_decay}")
    _validate_optim(cfg)
    if cfg.model.g.conditioning:
        raise ConfigError("model.g.conditioning: only a discriminator's conditioning is chosen (model.d.conditioning)")
    _validate_packing(cfg)
    _validate_instance_norm(cfg)
    _validate_architecture(cfg)
    _validate_encoder(cfg)
    cfg.game.validate(cfg)
    from distgan.augment import validate_augment

    validate_augment(cfg)
    if cfg.data.name == "shards" and not cfg.data.shards:
        raise ConfigError("data.name=shards needs data.shards (a path or brace pattern of .tar files)")
    if cfg.data.shuffle_buffer < 0:
        raise ConfigError(f"data.shuffle_buffer must be >= 0, got {cfg.data.shuffle_buffer}")
    if cfg.data.crop_scale < 1.0:
        raise ConfigError(f"data.crop_scale must be >= 1 (the crop is data.resolution), got {cfg.data.crop_scale}")
    if not 0.0 <= cfg.data.max_skipped_fraction <= 1.0:
        raise ConfigError(f"data.max_skipped_fraction must be in [0, 1], got {cfg.data.max_skipped_fraction}")
    if cfg.data.name != "shards":
        streamed_only = {"data.hflip": cfg.data.hflip, "data.crop": cfg.data.crop != "center",
                         "data.crop_scale": cfg.data.crop_scale != 1.0, "data.shards": bool(cfg.data.shards)}
        for key, is_set in streamed_only.items():
            if is_set:
                raise ConfigError(f"{key} applies to data.name=shards only (data.name={cfg.data.name})")
    if cfg.data.split != "all" and cfg.data.name not in DIGIT_DATA:
        raise ConfigError(f"data.split applies to data.name={', '.join(DIGIT_DATA)} only (data.name={cfg.data.name})")
    if cfg.data.pairing != "paired" and cfg.data.name not in DIGIT_DOMAINS:
        raise ConfigError(f"data.pairing applies to data.name={', '.join(DIGIT_DOMAINS)} only "
                          f"(data.name={cfg.data.name}; shards are paired or not as packed: with a built-in "
                          f"domain config on shards, set data.pairing=paired, the default, and data.split=all)")
    if cfg.data.name in ("ring", "grid") and (cfg.model.g.arch != "mlp" or cfg.model.d.arch != "mlp"):
        raise ConfigError(
            f"data.name={cfg.data.name} is 2-D points: model.g.arch and model.d.arch must be mlp"
        )
    _validate_eval(cfg)
    mode = cfg.train.resume
    if mode not in ("never", "auto") and not Path(mode).exists():
        raise ConfigError(f"train.resume={mode!r}: expected never, auto or an existing checkpoint path")


def _validate_optim(cfg: Config) -> None:
    """Every optimizer group the game declares gets a config (defaults where left out); any other
    `optim.<key>` is an error naming it."""
    groups = type(cfg.game).optimizer_groups
    for key in cfg.optim:
        if key not in groups:
            raise ConfigError(f"unknown config key optim.{key}: game.name={cfg.game.name} has the optimizer "
                              f"groups {', '.join(groups)}")
    cfg.optim = {g: cfg.optim.get(g) or OptimizerConfig() for g in groups}
    for g, ocfg in cfg.optim.items():
        if len(ocfg.betas) != 2:
            raise ConfigError(f"optim.{g}.betas needs exactly two values, got {ocfg.betas}")
        if ocfg.lr < 0:
            raise ConfigError(f"optim.{g}.lr must be >= 0, got {ocfg.lr}")


def eval_metrics(data_name: str, metrics: list[str]) -> list[str]:
    """The metrics to compute for `data_name` (the defaults when `metrics` is empty); ConfigError
    naming eval.metrics when one is unknown or does not apply to the data."""
    for m in metrics:
        if m not in EVAL_METRICS:
            raise ConfigError(f"eval.metrics: unknown metric {m!r} (choose from {', '.join(EVAL_METRICS)})")
        if data_name in POINT_DATA and m != "modes":
            raise ConfigError(f"eval.metrics={m}: data.name={data_name} is 2-D points; only modes applies")
        if m == "modes" and data_name not in MODE_DATA:
            raise ConfigError(f"eval.metrics=modes applies to data.name={', '.join(MODE_DATA)} only, "
                              f"not {data_name}")
    if metrics:
        return list(metrics)
    if data_name in POINT_DATA:
        return ["modes"]
    return (["modes"] if data_name in MODE_DATA else []) + ["fid", "kid", "is", "pr"]


def metric_keys(metric: str, data_name: str) -> tuple[str, ...]:
    """Result keys of `metric` on `data_name` (high_quality exists for 2-D points only)."""
    if metric == "modes" and data_name not in POINT_DATA:
        return ("modes", "reverse_kl")
    return EVAL_METRICS[metric]


def _validate_eval(cfg: Config) -> None:
    ecfg = cfg.eval
    if ecfg.every < 0:
        raise ConfigError(f"eval.every must be >= 0, got {ecfg.every}")
    if ecfg.truncation < 0:
        raise ConfigError(f"eval.truncation must be >= 0 (0 = none), got {ecfg.truncation}")
    if ecfg.num < 2:
        raise ConfigError(f"eval.num must be >= 2, got {ecfg.num}")
    if ecfg.reference_num < 0:
        raise ConfigError(f"eval.reference_num must be >= 0 (0 = all), got {ecfg.reference_num}")
    eval_metrics(cfg.data.name, ecfg.metrics)
    if ecfg.features not in ("digits", "inception") and ":" not in ecfg.features:
        raise ConfigError(f"eval.features={ecfg.features!r}: expected digits, inception or module.path:callable")
    if ecfg.best:
        keys = [k for m in eval_metrics(cfg.data.name, ecfg.metrics) for k in metric_keys(m, cfg.data.name)]
        if ecfg.best not in EVAL_LOWER_IS_BETTER + EVAL_HIGHER_IS_BETTER or ecfg.best not in keys:
            valid = [k for k in keys if k in EVAL_LOWER_IS_BETTER + EVAL_HIGHER_IS_BETTER]
            raise ConfigError(f"eval.best={ecfg.best!r} is not a result of eval.metrics (choose from {', '.join(valid)})")
        if not ecfg.every:
            raise ConfigError("eval.best keeps the best checkpoint during training: it needs eval.every > 0")


# --------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting where unambiguous."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool):
            # YAML 1.1 reads an unquoted no/off/false (yes/on/true) as a boolean: train.precision=no
            # means the choice spelled that way.
            spelled = [c for c in choices if isinstance(c, str) and yaml.safe_load(c) is value]
            value = spelled[0] if len(spelled) == 1 else value
        if value not in choices:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is dict:
        _, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key} expects a mapping, got {value!r}")
        return {k: (_build(value_tp, v, f"{key}.{k}") if dataclasses.is_dataclass(value_tp)
                    else _coerce(v, value_tp, f"{key}.{k}")) for k, v in value.items()}
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} expects a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} expects true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} expects an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} expects a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} expects a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} expects a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = prefix or "the top level"
            raise ConfigError(
                f"unknown config key {prefix + '.' if prefix else ''}{key} "
                f"(valid keys in {where}: {', '.join(sorted(names))})"
            )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        resolve = f.metadata.get("resolve")
        tp = resolve(data[f.name]) if resolve else hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, data[f.name], key)
        else:
            kwargs[f.name] = _coerce(data[f.name], tp, key)
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["train.steps=10", "log.wandb=offline"]` -> nested dict (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        _set_dotted(tree, key, yaml.safe_load(raw) if raw.strip() else "")
    return tree


def from_dict(data: dict[str, Any]) -> Config:
    cfg = _build(Config, data, "")
    validate(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """YAML file (may be None: defaults) + dotted overrides -> validated Config."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    data = _merge(data, parse_overrides(list(overrides)))
    return from_dict(data)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
