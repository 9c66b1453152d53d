"""Feature extractors (FID Inception architecture, digits, user modules), eval config, the reference cache."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distgan.config import load_config
from distgan.errors import ConfigError
from distgan.metrics.evaluate import BLOCK, my_blocks, reference_features, reference_key
from distgan.metrics.features import build_extractor
from distgan.metrics.inception import FID_WEIGHTS_NAME, FIDInceptionV3, load_fid_inception, preprocess


def test_fid_inception_architecture_with_random_weights(tmp_path):
    torch.manual_seed(0)
    net = FIDInceptionV3().eval()
    keys = net.state_dict().keys()
    # torchvision's names, as in the pt_inception-2015-12-05 state dict
    for key in ("Conv2d_1a_3x3.conv.weight", "Conv2d_4a_3x3.bn.running_var", "Mixed_5b.branch_pool.conv.weight",
                "Mixed_6e.branch7x7dbl_5.conv.weight", "Mixed_7c.branch3x3dbl_3b.bn.bias", "fc.weight", "fc.bias"):
        assert key in keys
    assert not any(k.startswith("AuxLogits") for k in keys)
    assert net.fc.weight.shape == (1008, 2048)
    path = tmp_path / FID_WEIGHTS_NAME
    torch.save(net.state_dict(), path)
    ext = build_extractor("inception", inception_weights=str(path))
    feats, logits = ext(torch.rand(2, 1, 16, 16) * 2 - 1)  # grayscale, any size: resized to 299
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008)
    assert ext.key.startswith("inception-") and ext.num_features == 2048
    assert preprocess(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 299, 299)


def test_inception_without_weights_names_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="eval.inception_weights"):
        load_fid_inception("")
    with pytest.raises(ConfigError, match="eval.inception_weights=.*no such file"):
        load_fid_inception(str(tmp_path / "missing.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save(nn.Linear(2, 2).state_dict(), wrong)
    with pytest.raises(ConfigError, match="not the FID Inception"):
        load_fid_inception(str(wrong))


class TinyFeatures(nn.Module):
    def forward(self, x):
        return {"features": x.flatten(1)[:, :5], "logits": x.flatten(1)[:, :3]}


def tiny_features() -> nn.Module:
    return TinyFeatures()


def test_user_module_by_import_path():
    ext = build_extractor(f"{__name__}:tiny_features", sample_shape=(1, 8, 8))
    assert (ext.num_features, ext.num_classes, ext.kind) == (5, 3, "module")
    with pytest.raises(ConfigError, match="cannot import"):
        build_extractor("no_such_module_xyz:f")


@pytest.mark.parametrize("override, named", [
    ("eval.metrics=[fidd]", "eval.metrics"),
    ("eval.metrics=[modes]", "eval.metrics=modes"),
    ("eval.best=fid", "eval.best keeps"),
    ("eval.bn=mean", "eval.bn"),
    ("eval.num=1", "eval.num"),
    ("eval.features=resnet", "eval.features"),
])
def test_eval_config_errors_name_the_key(override, named):
    with pytest.raises(ConfigError, match=named):
        load_config("configs/dcgan_digits.yaml", [override])


def test_eval_config_best_must_be_a_requested_result():
    cfg = load_config("configs/dcgan_digits.yaml", ["eval.every=10", "eval.best=fid"])
    assert cfg.eval.best == "fid"
    with pytest.raises(ConfigError, match="eval.best='kid_std'"):
        load_config("configs/dcgan_digits.yaml", ["eval.every=10", "eval.best=kid_std"])
    with pytest.raises(ConfigError, match="eval.best='modes'"):
        load_config("configs/dcgan_digits.yaml", ["eval.every=10", "eval.best=modes"])
    with pytest.raises(ConfigError, match="only modes"):
        load_config("configs/gan_ring.yaml", ["eval.metrics=[fid]"])


def test_blocks_cover_every_sample_once_on_any_world_size():
    for num in (1, BLOCK, BLOCK + 1, 5 * BLOCK - 3):
        for world in (1, 2, 3, 8):
            blocks = [b for r in range(world) for b in my_blocks(num, r, world)]
            assert blocks == list(range(-(-num // BLOCK)))


def test_reference_features_are_cached_by_data_resolution_and_extractor(tmp_path):
    cfg = load_config(None, ["data.resolution=8", f"eval.cache_dir={tmp_path}"])
    ext = build_extractor("digits")
    first = reference_features(cfg, ext, torch.device("cpu"))
    path = tmp_path / "reference" / f"{reference_key(cfg, ext)}.safetensors"
    assert path.is_file() and "digits-r8-digits-" in path.name
    assert first["features"].shape == (1797, 128) and first["labels"].shape == (1797,)
    from safetensors.torch import save_file

    save_file({k: v * 0 for k, v in first.items()}, str(path))  # prove the second call reads the file
    assert reference_features(cfg, ext, torch.device("cpu"))["features"].abs().sum() == 0
