"""Pix2PixHD's pieces: the coarse-to-fine generator's two stages and what sampling shows of each, the
multi-scale PatchGAN, the feature-matching loss, the game's stage switch and loss terms, and the
perceptual loss from a user's VGG file (read, checked, refused with one line when missing or unfit)."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from distgan.config import check_files, load_config
from distgan.data import build_source
from distgan.errors import ConfigError
from distgan.games import StepContext, build_game
from distgan.models.patchgan import PatchDiscriminator, patch_grid
from distgan.models.perceptual import load_vgg, perceptual_loss
from distgan.models.pix2pixhd import MultiscaleDiscriminator, Pix2PixHDGenerator, downsample, feature_matching
from distgan.sections.vgg_file import vgg_layout

CONFIG = "configs/pix2pixhd_digits_edges.yaml"
# 32 px: G1 at 16 px, halved twice to 4 px; D of depth 1 at 2 scales leaves patches at 8 px (the global
# stage's smallest scale).
TINY = ["data.resolution=32", "model.g.width=4", "model.g.depth=1", "model.d.width=4", "model.d.depth=1",
        "game.global_downsamplings=2", "game.local_blocks=1", "train.steps=4"]


def tiny_vgg(path, channels=3):
    """A random-weight VGG-style file: block 1 = conv(channels -> 4), conv(4 -> 4); max pool; block 2 =
    conv(4 -> 6), conv(6 -> 6), the last never used (after the last tap). torchvision's indices."""
    gen = torch.Generator().manual_seed(0)
    shapes = {"0": (4, channels), "2": (4, 4), "5": (6, 4), "7": (6, 6)}
    tensors = {}
    for index, (out, inp) in shapes.items():
        tensors[f"features.{index}.weight"] = torch.randn(out, inp, 3, 3, generator=gen) * 0.3
        tensors[f"features.{index}.bias"] = torch.randn(out, generator=gen) * 0.1
    save_file(tensors, str(path))
    return path


def _game(*extra):
    torch.manual_seed(0)
    cfg = load_config(CONFIG, [*TINY, *extra])
    source = build_source(cfg, global_batch=4, rank=0, world_size=1)
    return build_game(cfg, source.info), source.next_batch()


def _ctx():
    return StepContext((0,), total=4, offset=0, local_batch=4, device=torch.device("cpu"))


# ----------------------------------------------------------------------------- generator


def test_generator_stages_their_sizes_and_what_sampling_shows():
    torch.manual_seed(0)
    G = Pix2PixHDGenerator(1, 1, 32, width=4, blocks=1, downsamplings=2, local_blocks=1)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    coarse, fine = G(x, stage="global"), G(x, stage="joint")
    assert coarse.shape == (2, 1, 16, 16) and fine.shape == (2, 1, 32, 32)
    torch.testing.assert_close(coarse, G.global_net.head(G.global_net.body(downsample(x))))
    G.eval()
    with torch.no_grad():
        torch.testing.assert_close(G(x), fine)  # the buffer says joint (a fresh net)
        G.joint.fill_(0.0)
        torch.testing.assert_close(G(x), F.interpolate(coarse, scale_factor=2, mode="bilinear"))
    # The local enhancer adds G1's features: changing G1's body changes the joint output.
    with torch.no_grad():
        G.global_net.body[1].weight.mul_(2)
    assert not torch.allclose(G(x, stage="joint"), fine)


@pytest.mark.parametrize("stage, unused", [("global", "local."), ("joint", "global_net.head.")])
def test_each_stage_gives_every_parameter_a_gradient_the_unused_part_zero(stage, unused):
    torch.manual_seed(0)
    G = Pix2PixHDGenerator(1, 1, 32, width=4, blocks=1, downsamplings=2, local_blocks=1).train()
    G(torch.rand(2, 1, 32, 32), stage=stage).square().mean().backward()
    for name, p in G.named_parameters():
        assert p.grad is not None, name  # DDP waits for every parameter otherwise
        assert (p.grad.abs().sum() == 0) == name.startswith(unused), name


def test_generator_refuses_a_resolution_its_global_part_cannot_halve():
    with pytest.raises(ConfigError, match="game.global_downsamplings=3"):
        Pix2PixHDGenerator(1, 1, 16, width=4, blocks=1, downsamplings=3)  # 8 px halved 3 times: 1 px
    with pytest.raises(ConfigError, match="model.g.width=5"):
        Pix2PixHDGenerator(1, 1, 32, width=5, blocks=1, downsamplings=2)


# ----------------------------------------------------------------------------- discriminator


def test_multiscale_d_judges_each_scale_at_its_size_with_the_same_patchgan():
    torch.manual_seed(0)
    D = MultiscaleDiscriminator([PatchDiscriminator(2, 32 // 2**k, 4, 1) for k in range(3)])
    x = torch.randn(2, 2, 32, 32)
    out = D(x, outputs=("logits", "features"))
    assert [tuple(t.shape) for t in out["logits"]] == [(2, patch_grid(32 // 2**k, 1) ** 2) for k in range(3)]
    torch.testing.assert_close(out["logits"][2], D.scales[2](downsample(downsample(x))))
    assert [len(f) for f in out["features"]] == [2, 2, 2]  # depth 1: one stride-2 and one stride-1 layer
    assert set(D(x)) == {"logits"}


def test_feature_matching_weighs_layers_and_scales_as_the_reference_code():
    fake = [[torch.ones(1, 2, 2, 2), torch.zeros(1, 1, 2, 2)], [torch.full((1, 1, 1, 1), 3.0), torch.ones(1, 1, 1, 1)]]
    real = [[torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2)], [torch.ones(1, 1, 1, 1), torch.ones(1, 1, 1, 1)]]
    # 1 / scales x 4 / layers x sum of the layers' mean |difference|: (1 + 0) and (2 + 0)
    assert feature_matching(fake, real).item() == pytest.approx(0.5 * 2 * 1 + 0.5 * 2 * 2)


# ----------------------------------------------------------------------------- the game


def test_the_global_stage_trains_g1_on_half_size_pairs_then_the_local_enhancer_joins():
    game, batch = _game("game.local_start=2")  # of 4 steps: 2 global, 2 joint
    assert game.local_start == 2 and not game.joint
    ctx = _ctx()
    terms = game.g_loss(batch, ctx)
    assert set(terms) == {"adv", "fm"} and ctx.memo["fake"].shape == (4, 1, 16, 16)
    torch.testing.assert_close(ctx.memo["target"], downsample(batch.x))  # direction BA: edges -> digits
    assert game.nets["G"].joint.item() == 0.0
    d_terms = game.d_loss(batch, ctx)
    assert set(d_terms) == {"real", "fake"}
    for _ in range(2):
        game.after_step(game.phases()[0])
    assert game.joint and game.state_dict() == {"steps": 2}
    ctx = _ctx()
    game.g_loss(batch, ctx)
    assert ctx.memo["fake"].shape == (4, 1, 32, 32) and game.nets["G"].joint.item() == 1.0
    game.after_step(game.phases()[1])  # D's steps are not generator steps
    assert game.state_dict() == {"steps": 2}
    game.load_state_dict({"steps": 1})
    assert not game.joint


def test_the_adversarial_terms_add_up_over_the_scales_and_d_halves_them():
    game, batch = _game("game.fm_weight=0", "game.local_start=0")  # jointly from the first step
    ctx = _ctx()
    terms = game.g_loss(batch, ctx)
    assert set(terms) == {"adv"}
    pairs = torch.cat([batch.x_b, ctx.memo["fake"]], 1)
    logits = game.nets["D"](pairs)["logits"]
    torch.testing.assert_close(terms["adv"], sum(0.5 * (lg - 1).pow(2).mean() for lg in logits))
    real = game.nets["D"](torch.cat([batch.x_b, batch.x], 1))["logits"]
    torch.testing.assert_close(game.d_loss(batch, ctx)["fake"], 0.5 * sum(0.5 * lg.pow(2).mean() for lg in logits))
    torch.testing.assert_close(game.d_loss(batch, ctx)["real"], 0.5 * sum(0.5 * (lg - 1).pow(2).mean() for lg in real))


@pytest.mark.parametrize("overrides, message", [
    (["model.g.arch=unet"], "model.g.arch must be pix2pixhd"),
    (["game.vgg_weight=10"], "game.vgg_weight and game.vgg_file go together"),
    (["game.vgg_file=x.safetensors"], "game.vgg_weight and game.vgg_file go together"),
    (["game.local_start=-1"], r"game.local_start must be >= 0"),
    (["game.scales=0"], "game.scales must be > 0"),
])
def test_config_refusals_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIG, overrides)


def test_a_d_with_more_scales_than_the_pairs_allow_is_refused():
    with pytest.raises(ConfigError, match="game.scales=3, model.d.depth=1: the smallest scale of D sees 4 px"):
        _game("game.scales=3", "game.local_start=2")  # the global stage shows the third scale 32 / 2 / 4 = 4 px pairs


# ----------------------------------------------------------------------------- the perceptual loss


def test_a_vgg_file_is_read_into_its_taps_and_the_loss_weighs_them_as_pix2pixhd(tmp_path):
    path = tiny_vgg(tmp_path / "vgg.safetensors")
    assert vgg_layout(str(path)) == [[("0", 3, 4), ("2", 4, 4)], [("5", 4, 6)]]  # nothing after the last tap
    net = load_vgg(str(path), channels=1)
    fake, real = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    # By hand: relu1_1 = relu(conv0(x)); relu2_1 = relu(conv5(maxpool(relu(conv2(relu1_1))))).
    from safetensors.torch import load_file

    w = load_file(str(path))

    def conv(x, i):
        return F.relu(F.conv2d(x, w[f"features.{i}.weight"], w[f"features.{i}.bias"], padding=1))

    def taps(x):
        x = x.expand(-1, 3, -1, -1)
        a = conv(x, 0)
        return a, conv(F.max_pool2d(conv(a, 2), 2), 5)

    (fa, fb), (ra, rb) = taps(fake), taps(real)
    expected = (1 / 4) * (fa - ra).abs().mean() + 1.0 * (fb - rb).abs().mean()  # the last 2 of pix2pixHD's weights
    torch.testing.assert_close(perceptual_loss(net, fake, real), expected)
    assert not any(p.requires_grad for p in net.parameters())


def test_the_game_adds_the_perceptual_term_from_the_file(tmp_path):
    path = tiny_vgg(tmp_path / "vgg.safetensors")
    game, batch = _game("game.vgg_weight=10", f"game.vgg_file={path}")
    check_files(game_cfg := load_config(CONFIG, [*TINY, "game.vgg_weight=10", f"game.vgg_file={path}"]))
    assert game_cfg.game.vgg_file == str(path)
    terms = game.g_loss(batch, _ctx())
    assert set(terms) == {"adv", "fm", "vgg"} and terms["vgg"] > 0
    terms["vgg"].backward()
    assert game.nets["G"].global_net.head[1].weight.grad.abs().sum() > 0  # the global stage: G1's head


def _bad_files(tmp_path):
    good = torch.zeros(4, 3, 3, 3)
    cases = {
        "missing.safetensors": None,
        "not_safetensors.safetensors": b"\x05\x00\x00\x00\x00\x00\x00\x00hello",
        "bn.safetensors": {"0.weight": good, "0.bias": torch.zeros(4), "1.running_mean": torch.zeros(4)},
        "kernel.safetensors": {"0.weight": torch.zeros(4, 3, 5, 5), "0.bias": torch.zeros(4)},
        "chain.safetensors": {"0.weight": good, "0.bias": torch.zeros(4), "2.weight": torch.zeros(4, 5, 3, 3),
                              "2.bias": torch.zeros(4)},
        "gap.safetensors": {"0.weight": good, "0.bias": torch.zeros(4), "4.weight": torch.zeros(4, 4, 3, 3),
                            "4.bias": torch.zeros(4)},
    }
    for name, content in cases.items():
        if isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        elif content is not None:
            save_file(content, str(tmp_path / name))
    return cases


@pytest.mark.parametrize("name, message", [
    ("missing.safetensors", "no such file"),
    ("not_safetensors.safetensors", "is not a .safetensors file"),
    ("bn.safetensors", "'1.running_mean' is not <index>.weight"),
    ("kernel.safetensors", "layer 0 is not a 3x3 convolution"),
    ("chain.safetensors", "layer 2 takes 5 channels, but the layer before gives 4"),
    ("gap.safetensors", "layers 0 and 4 are 4 apart"),
])
def test_a_missing_or_unfit_vgg_file_is_refused_when_training_starts(tmp_path, name, message):
    _bad_files(tmp_path)
    cfg = load_config(CONFIG, ["game.vgg_weight=10", f"game.vgg_file={tmp_path / name}"])  # loading reads no file
    with pytest.raises(ConfigError, match=f"^game.vgg_file='{tmp_path / name}'.*{message}") as err:
        check_files(cfg)
    assert "\n" not in str(err.value)


def test_a_vgg_file_for_other_channels_is_refused_when_loaded(tmp_path):
    path = tiny_vgg(tmp_path / "vgg2.safetensors", channels=2)
    with pytest.raises(ConfigError, match="its first convolution takes 2 channels, the images have 1"):
        load_vgg(str(path), channels=1)


def test_the_file_check_runs_without_torch(tmp_path):
    """`distgan train --dry-run` where torch is not installed still checks the file's layout."""
    path = tiny_vgg(tmp_path / "vgg.safetensors")
    code = ("import sys; sys.modules['torch'] = None\n"
            "from distgan.config import check_files, load_config\n"
            f"cfg = load_config({CONFIG!r}, ['game.vgg_weight=10', 'game.vgg_file={path}'])\n"
            "check_files(cfg)\n"
            f"cfg = load_config({CONFIG!r}, ['game.vgg_weight=10', 'game.vgg_file={path}.gone'])\n"
            "check_files(cfg)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1 and "no such file" in proc.stderr.splitlines()[-1], proc.stderr
    assert "ModuleNotFoundError" not in proc.stderr and "import of torch halted" not in proc.stderr
