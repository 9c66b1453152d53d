"""The `game:` section of every registered game, and the registry of games.

Each game's section (a `GameConfig` subclass) holds the keys only it reads, its pure checks
(`validate`) and what it can do that other sections depend on (ClassVars: its optimizer groups,
whether it forms PacGAN packs, routes D's inputs through augmentation, builds an encoder, takes
class conditioning, truncates its noise). `implementation` names the game's code, imported only
when a run is built (distgan.games.game_class), so a config is checked without torch.

Adding a variant: its game (distgan/games/<name>.py), its section below, one line in `GAMES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from distgan.errors import ConfigError
from distgan.sections.data import POINT_DATA
from distgan.sections.model import changed_keys


@dataclass
class GameConfig:
    """Base of every game's config section (`game:`). `game.name` picks the class, and keys of
    another game are unknown keys."""

    name: str = "gan"  # a registered game (GAMES below) or module.path:GameClass

    # The game's code, `module.path:GameClass` (imported when the run is built).
    implementation: ClassVar[str] = ""
    # Optimizer groups (`optim.<group>`) this game accepts; the game maps each to its nets.
    optimizer_groups: ClassVar[tuple[str, ...]] = ("g", "d")
    # Whether the game forms model.d.packing packs from its batches (distgan.models.packing).
    supports_packing: ClassVar[bool] = False
    # Whether every input of the game's D goes through Game.d_view (the `augment:` section).
    supports_augment: ClassVar[bool] = False
    # Whether the game builds an encoder from model.e (BiGAN, VAE-GAN); the others refuse model.e keys.
    has_encoder: ClassVar[bool] = False
    # The model.d.conditioning values the game's D takes (empty: D is unconditional).
    conditionings: ClassVar[tuple[str, ...]] = ()
    # Whether sampling can truncate the game's noise (BigGAN's truncation trick: eval.truncation).
    supports_truncation: ClassVar[bool] = False

    def validate(self, cfg) -> None:
        """Cross-field checks against the whole config, touching no file; raise ConfigError naming the key."""

    def require_non_negative(self, *keys: str) -> None:
        for key in keys:
            if getattr(self, key) < 0:
                raise ConfigError(f"game.{key} must be >= 0, got {getattr(self, key)}")

    def require_positive(self, *keys: str) -> None:
        for key in keys:
            if getattr(self, key) <= 0:
                raise ConfigError(f"game.{key} must be > 0, got {getattr(self, key)}")

    def check_files(self, cfg) -> None:
        """Checks that read files (e.g. a shards manifest), run when training starts, never when a
        finished run is opened; raise ConfigError naming the key."""


@dataclass
class AdversarialConfig(GameConfig):
    """`game:` keys of `name: gan`."""

    name: str = "gan"
    implementation: ClassVar[str] = "distgan.games.gan:AdversarialGame"
    # Adversarial loss (distgan.losses): nonsaturating | minimax | least_squares | wasserstein | hinge,
    # or an f-GAN divergence (Nowozin et al. 2016): fgan_kl | fgan_reverse_kl | fgan_pearson |
    # fgan_hellinger | fgan_js | fgan_gan
    loss: Literal["nonsaturating", "minimax", "least_squares", "wasserstein", "hinge", "fgan_kl", "fgan_reverse_kl",
                  "fgan_pearson", "fgan_hellinger", "fgan_js", "fgan_gan"] = "nonsaturating"
    n_critic: int = 1  # D steps per G step
    label_smoothing: float = 0.0  # one-sided: real target 1 - label_smoothing (nonsaturating/minimax)
    gp_weight: float = 0.0  # WGAN-GP gradient penalty weight (lambda)
    r1_gamma: float = 0.0  # R1 penalty weight on real data
    r1_interval: int = 1  # lazy R1: apply every k D steps (weight scaled by k)
    clip: float = 0.0  # WGAN weight clipping of D parameters to [-clip, clip]; 0 = off

    supports_packing: ClassVar[bool] = True  # forms model.d.packing packs (see packing.pack)
    supports_augment: ClassVar[bool] = True  # every input of D goes through Game.d_view

    def validate(self, cfg) -> None:
        self.require_positive("n_critic", "r1_interval")
        self.require_non_negative("gp_weight", "r1_gamma", "clip")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"game.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.label_smoothing and self.loss not in ("nonsaturating", "minimax"):
            raise ConfigError(
                f"game.label_smoothing applies to the cross-entropy losses only, not game.loss={self.loss}")
        if self.clip and self.gp_weight:
            raise ConfigError("game.clip and game.gp_weight both constrain D's Lipschitz constant; set only one")
        # Per-sample penalties: BatchNorm mixes the samples of a batch, so the penalty of one sample
        # depends on its batch-mates (WGAN-GP paper, sec. 4), and 1 and N processes would differ.
        for key in ("gp_weight", "r1_gamma"):
            if getattr(self, key) and cfg.model.d.norm == "batch":
                raise ConfigError(f"game.{key} with model.d.norm=batch: the penalty is per sample, which "
                                  f"BatchNorm breaks (WGAN-GP paper, sec. 4); use model.d.norm=none")


@dataclass
class ConditionalConfig(GameConfig):
    """`game:` keys of `name: cgan`."""

    name: str = "cgan"
    implementation: ClassVar[str] = "distgan.games.conditional:ConditionalGame"
    # Adversarial loss (distgan.losses): nonsaturating | minimax | least_squares | wasserstein | hinge
    loss: Literal["nonsaturating", "minimax", "least_squares", "wasserstein", "hinge"] = "nonsaturating"
    noise: Literal["normal", "uniform"] = "normal"  # z ~ N(0, I), or U[-1, 1] as in the Keras AC-GAN example
    # Noise batches per G step, generated as one batch (the Keras AC-GAN example: 2, "twice the size").
    g_batches: int = 1

    conditionings: ClassVar[tuple[str, ...]] = ("concat", "projection")  # model.d.conditioning accepted
    supports_augment: ClassVar[bool] = True  # every input of D goes through Game.d_view

    def validate(self, cfg) -> None:
        self.require_positive("g_batches")
        if cfg.data.name in POINT_DATA:
            raise ConfigError(f"game.name={self.name} is conditional, but data.name={cfg.data.name} has no class "
                              f"labels (use digits, stacked_digits or labelled shards)")


@dataclass
class ACGANConfig(ConditionalConfig):
    """`game:` keys of `name: acgan`."""

    name: str = "acgan"
    implementation: ClassVar[str] = "distgan.games.conditional:ACGANGame"
    aux_weight: float = 1.0  # weight of the auxiliary class cross-entropy in both players' losses
    # Scale of D's auxiliary term on fakes (1 = the paper and the Keras example; 0 = D's classifier
    # learns from real samples only, so G cannot make its own version of a class pass as that class).
    aux_fake_weight: float = 1.0

    conditionings: ClassVar[tuple[str, ...]] = ("aux",)

    def validate(self, cfg) -> None:
        super().validate(cfg)
        self.require_non_negative("aux_weight", "aux_fake_weight")


@dataclass
class BigGANConfig(ConditionalConfig):
    """`game:` keys of `name: biggan`."""

    name: str = "biggan"
    implementation: ClassVar[str] = "distgan.games.biggan:BigGANGame"
    loss: Literal["nonsaturating", "minimax", "least_squares", "wasserstein", "hinge"] = "hinge"
    n_critic: int = 2  # D steps per G step
    # Weight of the orthogonal regularisation ||W W^T * (1 - I)||_F^2 summed over G's weights (not its
    # shared class embedding); 0 = off.
    ortho_weight: float = 1e-4
    shared_dim: int = 128  # the class embedding shared by every conditional BN of G
    hierarchical: bool = True  # z split across G's input layer and blocks (else all of z at the input)

    conditionings: ClassVar[tuple[str, ...]] = ("projection",)
    supports_truncation: ClassVar[bool] = True

    def validate(self, cfg) -> None:
        super().validate(cfg)
        self.require_positive("n_critic")
        self.require_non_negative("ortho_weight")
        self.require_positive("shared_dim")
        for side in ("g", "d"):
            arch = getattr(cfg.model, side).arch
            if arch != "sngan":
                raise ConfigError(f"model.{side}.arch={arch}: game.name=biggan uses the sngan ResNet nets "
                                  f"(G takes the class through conditional BatchNorm)")
        if cfg.model.g.norm != "batch":
            raise ConfigError("model.g.norm: BigGAN's G takes the class through its BatchNorms (batch)")


@dataclass
class InfoGANConfig(GameConfig):
    """`game:` keys of `name: infogan`."""

    name: str = "infogan"
    implementation: ClassVar[str] = "distgan.games.infogan:InfoGANGame"
    categories: int = 10  # classes of the categorical code (0 = none)
    continuous: int = 2  # continuous codes, uniform in [-1, 1]
    info_weight: float = 1.0  # lambda: weight of the mutual-information loss in both players' losses
    # Extra factor on the continuous codes' term (the paper sets their lambda lower, so that the
    # differential entropy is on the scale of the categorical term).
    continuous_weight: float = 1.0
    variance: Literal["fixed", "learned"] = "fixed"  # Q's Gaussian for the continuous codes: unit, or predicted
    q_width: int = 128  # hidden units of the Q head
    # Normalisation of Q's hidden layer: none (Linear-LReLU-Linear), or batch (the paper's
    # FC-BN-LReLU-FC, a BatchNorm of Q's own, trained with Q in both phases).
    q_norm: Literal["none", "batch"] = "none"

    optimizer_groups = ("g", "d", "q")
    supports_augment = True  # every input of D goes through Game.d_view (Q reads the augmented fakes' features)

    def validate(self, cfg) -> None:
        if self.categories < 0 or self.continuous < 0 or self.categories + self.continuous == 0:
            raise ConfigError(f"game.categories={self.categories} and game.continuous={self.continuous}: "
                              f"InfoGAN needs at least one code (both >= 0)")
        if self.categories == 1:
            raise ConfigError("game.categories=1 carries no information; use 0 (none) or >= 2")
        self.require_non_negative("info_weight", "continuous_weight")
        self.require_positive("q_width")


@dataclass
class Pix2PixConfig(GameConfig):
    """`game:` keys of `name: pix2pix`."""

    name: str = "pix2pix"
    implementation: ClassVar[str] = "distgan.games.translation:Pix2PixGame"
    loss: Literal["nonsaturating", "least_squares"] = "nonsaturating"  # the adversarial term
    l1_weight: float = 100.0  # lambda of the L1 term
    direction: Literal["AB", "BA"] = "AB"  # AB: batch.x -> batch.x_b; BA: batch.x_b -> batch.x
    # Sampling and `distgan translate` with G's dropout on, as the paper tests (its masks drawn from the
    # sampling seed, so the same seed gives the same images); false: off, each input has one translation.
    sample_dropout: bool = False

    def validate(self, cfg) -> None:
        self.require_non_negative("l1_weight")
        if cfg.model.d.arch != "patchgan":
            raise ConfigError(f"game.name=pix2pix judges (input, output) pairs: model.d.arch must be patchgan, "
                              f"not {cfg.model.d.arch}")


@dataclass
class CycleConfig(GameConfig):
    """`game:` keys of `name: cyclegan` (and of DualGAN and DiscoGAN, which are configs of it)."""

    name: str = "cyclegan"
    implementation: ClassVar[str] = "distgan.games.translation:CycleGame"
    # The adversarial loss: least_squares (CycleGAN), wasserstein (DualGAN, with game.clip),
    # nonsaturating (DiscoGAN).
    loss: Literal["least_squares", "wasserstein", "nonsaturating"] = "least_squares"
    cycle_weight: float = 10.0  # lambda of the cycle (reconstruction) terms
    cycle_distance: Literal["l1", "l2"] = "l1"  # l2: DiscoGAN's mean squared reconstruction error
    identity_weight: float = 0.5  # identity terms |G_AB(b) - b|, as a fraction of cycle_weight (0 = off)
    history: int = 50  # earlier fakes kept per discriminator (0 = D sees only this step's)
    clip: float = 0.0  # weight clipping of D_A, D_B to [-clip, clip] (DualGAN's WGAN critics); 0 = off
    direction: Literal["AB", "BA"] = "AB"  # what sampling translates by default

    def validate(self, cfg) -> None:
        self.require_non_negative("cycle_weight", "identity_weight", "clip")
        self.require_non_negative("history")
        if self.loss == "wasserstein" and not self.clip:
            raise ConfigError("game.loss=wasserstein needs a Lipschitz constraint on the critics: set game.clip "
                              "(DualGAN: 0.01)")


@dataclass
class Pix2PixHDConfig(GameConfig):
    """`game:` keys of `name: pix2pixhd` (its nets: model.g.arch pix2pixhd, model.d.arch patchgan)."""

    name: str = "pix2pixhd"
    implementation: ClassVar[str] = "distgan.games.pix2pixhd:Pix2PixHDGame"
    loss: Literal["least_squares", "nonsaturating"] = "least_squares"  # the adversarial term (the paper: LSGAN)
    direction: Literal["AB", "BA"] = "AB"  # AB: batch.x -> batch.x_b; BA: batch.x_b -> batch.x
    scales: int = 2  # image scales of the multi-scale D, each a PatchGAN of model.d (the paper: 3, its code: 2)
    fm_weight: float = 10.0  # lambda of D's feature-matching loss
    # The generator step at which the local enhancer joins: the steps before it train the global generator
    # alone, at half the resolution, the later ones both at the full resolution (0: jointly from the start).
    # A step, not a fraction of train.steps, so a run resumed with more train.steps keeps its stages.
    local_start: int = 0
    global_downsamplings: int = 3  # stride-2 convolutions of the global generator (the paper: 4 at 1024 px)
    local_blocks: int = 3  # residual blocks of the local enhancer
    vgg_weight: float = 0.0  # lambda of the perceptual loss (the paper: 10); 0 = off
    vgg_file: str = ""  # its VGG-style weights, a local .safetensors file (distgan.sections.vgg_file)

    def validate(self, cfg) -> None:
        self.require_positive("scales")
        self.require_non_negative("fm_weight", "vgg_weight", "local_start", "global_downsamplings", "local_blocks")
        for key, arch in (("g", "pix2pixhd"), ("d", "patchgan")):
            if getattr(cfg.model, key).arch != arch:
                raise ConfigError(f"game.name=pix2pixhd: model.{key}.arch must be {arch}, "
                                  f"not {getattr(cfg.model, key).arch}")
        if bool(self.vgg_weight) != bool(self.vgg_file):
            raise ConfigError("game.vgg_weight and game.vgg_file go together: the perceptual loss needs its weights "
                              "file, and a file without a weight would be unused")

    def check_files(self, cfg) -> None:
        if self.vgg_weight:
            from distgan.sections.vgg_file import vgg_layout

            vgg_layout(self.vgg_file)


@dataclass
class CoGANConfig(GameConfig):
    """`game:` keys of `name: cogan`."""

    name: str = "cogan"
    implementation: ClassVar[str] = "distgan.games.cogan:CoGANGame"
    loss: Literal["nonsaturating", "least_squares"] = "nonsaturating"

    def validate(self, cfg) -> None:
        for key in ("g", "d"):
            if getattr(cfg.model, key).arch != "dcgan":
                raise ConfigError(f"game.name=cogan couples DCGAN-shaped nets: model.{key}.arch must be dcgan, "
                                  f"not {getattr(cfg.model, key).arch}")
        # Shards are paired or not as packed: their manifest says which (check_files).
        if cfg.data.name != "shards" and cfg.data.pairing != "unpaired":
            raise ConfigError("game.name=cogan learns the joint distribution from the marginals alone: "
                              "data.pairing must be unpaired")

    def check_files(self, cfg) -> None:
        if cfg.data.name == "shards":
            from distgan.data.manifest import resolve_shards

            kind = resolve_shards(cfg.data.shards, cfg.data.manifest).manifest.kind
            if kind != "unpaired":
                raise ConfigError(f"game.name=cogan learns the joint distribution from the marginals alone: "
                                  f"data.shards={cfg.data.shards!r} are {kind}; pack A/ and B/ with "
                                  f"`distgan data pack ... --layout unpaired`")


@dataclass
class ContextEncoderConfig(GameConfig):
    """`game:` keys of `name: context_encoder`."""

    name: str = "context_encoder"
    implementation: ClassVar[str] = "distgan.games.context_encoder:ContextEncoderGame"
    loss: Literal["nonsaturating", "least_squares"] = "nonsaturating"  # the adversarial term
    rec_weight: float = 0.999  # weight of the masked-region L2 reconstruction
    adv_weight: float = 0.001  # weight of the adversarial term
    mask_fraction: float = 0.5  # side of the centre square, as a fraction of the image side

    def validate(self, cfg) -> None:
        self.require_non_negative("rec_weight", "adv_weight")
        if not 0 < self.mask_fraction < 1:
            raise ConfigError(f"game.mask_fraction must be in (0, 1), got {self.mask_fraction}")


@dataclass
class BiGANConfig(GameConfig):
    """`game:` keys of `name: bigan`."""

    name: str = "bigan"
    implementation: ClassVar[str] = "distgan.games.bigan:BiGANGame"
    # ALI's encoder: E(x) is a mean and a log-variance, and D sees a draw from that Gaussian.
    stochastic_encoder: bool = False
    # ALI's D: dropout of this probability after every activation of D (x-branch, z-branch, joint).
    d_dropout: float = 0.0

    has_encoder: ClassVar[bool] = True

    def validate(self, cfg) -> None:
        if not 0.0 <= self.d_dropout < 1.0:
            raise ConfigError(f"game.d_dropout must be in [0, 1), got {self.d_dropout}")


@dataclass
class VAEGANConfig(GameConfig):
    """`game:` keys of `name: vaegan`."""

    name: str = "vaegan"
    implementation: ClassVar[str] = "distgan.games.vaegan:VAEGANGame"
    # Weight of the reconstruction error in the decoder's loss against the adversarial one (the paper's
    # gamma); the encoder's loss is KL + reconstruction, unweighted.
    gamma: float = 1.0
    # Where the reconstruction error is measured: features (D's last hidden layer, the paper) or pixels.
    reconstruction: Literal["features", "pixels"] = "features"
    adv_weight: float = 1.0  # scale of the decoder's adversarial loss (0 with pixels = a plain VAE)

    optimizer_groups: ClassVar[tuple[str, ...]] = ("enc", "dec", "d")
    has_encoder: ClassVar[bool] = True

    def validate(self, cfg) -> None:
        self.require_non_negative("gamma", "adv_weight")
        if self.reconstruction == "features" and cfg.model.d.arch not in ("mlp", "dcgan"):
            raise ConfigError(f"game.reconstruction=features reads D's hidden features: model.d.arch mlp or dcgan, "
                              f"not {cfg.model.d.arch}")


@dataclass
class RelativisticConfig(AdversarialConfig):
    """`game:` keys of `name: relativistic`: those of `gan` (n_critic, clip; packing and augment
    apply), with the relativistic losses in place of gan's."""

    name: str = "relativistic"
    implementation: ClassVar[str] = "distgan.games.relativistic:RelativisticGame"
    # rsgan: relativistic standard GAN; ragan: relativistic average standard GAN (RaSGAN);
    # ralsgan: relativistic average least squares
    loss: Literal["rsgan", "ragan", "ralsgan"] = "ragan"

    def validate(self, cfg) -> None:
        super().validate(cfg)
        # The penalties and label smoothing live in gan's D loss, which this game replaces.
        for key in ("gp_weight", "r1_gamma", "label_smoothing"):
            if getattr(self, key):
                raise ConfigError(f"game.{key} is not supported by game.name={self.name} (game.loss={self.loss}); "
                                  f"leave it at 0")


@dataclass
class DrawConfig(GameConfig):
    """`game:` keys of `name: draw` (DRAW, Gregor et al. 2015). model.z_dim is the size of one step's z;
    the nets are the game's own (distgan.models.draw), so model.g / model.d keys are refused."""

    name: str = "draw"
    implementation: ClassVar[str] = "distgan.games.draw:DrawGame"
    steps: int = 10  # T: the steps (glimpses) that draw an image
    attention: bool = True  # read and write through N x N Gaussian filter grids; false: whole images
    read_size: int = 2  # N of the read glimpse (attention only)
    write_size: int = 5  # N of the written patch (attention only)
    enc_size: int = 256  # units of the encoder LSTM
    dec_size: int = 256  # units of the decoder LSTM
    # -log D(x | c_T): bernoulli (the paper's, the grey levels in [0, 1] as targets) or gaussian of
    # deviation game.pixel_std (in [0, 1] units) around sigmoid(c_T): 0.5 * sum ((x - sigmoid(c_T)) / std)^2.
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    pixel_std: float = 0.2

    optimizer_groups: ClassVar[tuple[str, ...]] = ("g",)  # one player: encoder and decoder

    def validate(self, cfg) -> None:
        self.require_positive("steps", "read_size", "write_size", "enc_size", "dec_size", "pixel_std")
        if cfg.data.name in POINT_DATA:
            raise ConfigError(f"game.name=draw draws images; data.name={cfg.data.name} gives points")
        for side in ("g", "d"):
            keys = changed_keys(getattr(cfg.model, side))
            if keys:
                raise ConfigError(f"model.{side}.{keys[0]}: DRAW's nets are its own (game.enc_size, game.dec_size, "
                                  f"game.read_size, game.write_size); it has no model.{side}")


@dataclass
class AAEConfig(GameConfig):
    """`game:` keys of `name: aae` (the adversarial autoencoder, Makhzani et al. 2015)."""

    name: str = "aae"
    implementation: ClassVar[str] = "distgan.games.aae:AAEGame"
    # q(z|x): deterministic (z = E(x)) or gaussian (E(x) = mean, log-variance; z a reparameterised draw).
    encoder: Literal["deterministic", "gaussian"] = "deterministic"
    # p(z): gaussian N(0, I), or mixture: game.components Gaussians of deviation game.mixture_std, their
    # means on a circle of radius game.mixture_radius in the first two code dimensions.
    prior: Literal["gaussian", "mixture"] = "gaussian"
    components: int = 10
    mixture_radius: float = 4.0
    mixture_std: float = 0.5
    adv_weight: float = 1.0  # weight of the encoder's adversarial term (the regularization phase)
    d_steps: int = 1  # D's steps per step, on the same batch (each with its own prior draws)

    optimizer_groups: ClassVar[tuple[str, ...]] = ("enc", "dec", "d")
    has_encoder: ClassVar[bool] = True

    def validate(self, cfg) -> None:
        self.require_positive("components", "mixture_radius", "mixture_std", "d_steps")
        self.require_non_negative("adv_weight")
        if cfg.model.d.arch != "mlp":
            raise ConfigError(f"model.d.arch={cfg.model.d.arch}: game.name=aae's D judges latent codes (vectors): "
                              f"use mlp")
        if self.prior == "mixture" and (self.components < 2 or cfg.model.z_dim < 2):
            raise ConfigError(f"game.prior=mixture places game.components={self.components} means on a circle in "
                              f"2 code dimensions: it needs game.components >= 2 and model.z_dim >= 2 "
                              f"(model.z_dim={cfg.model.z_dim})")


# game.name -> its section (and through it, its code). One line per game.
GAMES: dict[str, type[GameConfig]] = {
    "gan": AdversarialConfig,
    "cgan": ConditionalConfig,
    "acgan": ACGANConfig,
    "infogan": InfoGANConfig,
    "biggan": BigGANConfig,
    "pix2pix": Pix2PixConfig,
    "pix2pixhd": Pix2PixHDConfig,
    "cyclegan": CycleConfig,
    "cogan": CoGANConfig,
    "context_encoder": ContextEncoderConfig,
    "bigan": BiGANConfig,
    "vaegan": VAEGANConfig,
    "relativistic": RelativisticConfig,
    "draw": DrawConfig,
    "aae": AAEConfig,
}
