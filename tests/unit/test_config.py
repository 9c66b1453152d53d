import pytest

from distgan.config import ConfigError, load_config, parse_overrides
from distgan.errors import DistganError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(write(tmp_path, "train: {steps: 7}\n"), ["train.batch_size=3", "optim.g.lr=1e-4",
                                                               "log.wandb=offline", "optim.d.betas=[0.0, 0.9]"])
    assert cfg.train.steps == 7 and cfg.train.batch_size == 3
    assert cfg.optim["g"].lr == pytest.approx(1e-4)  # YAML reads 1e-4 as a string; coerced
    assert cfg.log.wandb == "offline"
    assert cfg.optim["d"].betas == [0.0, 0.9]


@pytest.mark.parametrize("yaml_text, overrides, key", [
    ("train: {stepz: 3}\n", [], "train.stepz"),
    ("", ["model.g.widht=3"], "model.g.widht"),
    ("bogus: 1\n", [], "bogus"),
])
def test_unknown_keys_are_named(tmp_path, yaml_text, overrides, key):
    with pytest.raises(ConfigError, match=f"unknown config key {key}"):
        load_config(write(tmp_path, yaml_text), overrides)


@pytest.mark.parametrize("override, key", [
    ("train.steps=ten", "train.steps"),
    ("train.steps=1.5", "train.steps"),
    ("model.sync_bn=maybe", "model.sync_bn"),
    ("game.loss=wgan", "game.loss"),
    ("train.precision=fp8", "train.precision"),
    ("optim.g.lr=fast", "optim.g.lr"),
    ("train=3", "train"),
])
def test_wrong_types_are_named(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_choices_that_yaml_reads_as_booleans():
    """YAML 1.1 reads an unquoted `no` as False; train.precision=no must still mean full precision."""
    assert load_config(None, ["train.precision=no"]).train.precision == "no"
    with pytest.raises(ConfigError, match=r"train\.precision=True"):  # no choice is spelled yes/on/true
        load_config(None, ["train.precision=yes"])


@pytest.mark.parametrize("overrides, key", [
    (["train.steps=0"], "train.steps"),
    (["game.clip=0.01", "game.gp_weight=10", "model.d.norm=none"], "game.clip"),
    (["game.gp_weight=10"], "model.d.norm"),
    (["train.ema_decay=1.0"], "train.ema_decay"),
    (["game.loss=hinge", "game.label_smoothing=0.1"], "game.label_smoothing"),
    (["data.name=ring"], "model.g.arch"),
    (["data.name=shards"], "data.shards"),
])
def test_contradictions_are_named(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, overrides)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_overrides(["train.steps"])
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config("missing.yaml")


def test_shipped_configs_load():
    import pathlib

    configs = sorted(pathlib.Path(__file__).resolve().parents[2].joinpath("configs").glob("*.yaml"))
    assert configs, "no configs shipped"
    for path in configs:
        cfg = load_config(path)
        assert cfg.run.name == path.stem, f"{path.name}: run.name should match the file name"


def test_precision_auto_is_full_precision_on_cpu():
    import torch

    from distgan.train.devices import resolve_precision

    assert load_config(None).train.precision == "auto"
    assert resolve_precision("auto", torch.device("cpu")) == "no"  # fp16 there: tests/train/test_devices.py


def test_validation_reads_no_file_and_check_files_names_what_is_missing(tmp_path):
    """A config naming a resume source or shards that are gone still loads (a finished run opens after
    they moved); the file checks run when training starts and name the key."""
    from distgan.config import check_files

    gone = load_config("configs/dcgan_digits.yaml", [f"train.resume={tmp_path / 'no_such_checkpoint'}"])
    with pytest.raises(ConfigError, match=r"train\.resume="):
        check_files(gone)
    shards = load_config("configs/dcgan_digits.yaml", ["data.name=shards", f"data.shards={tmp_path}/x-{{0..1}}.tar"])
    with pytest.raises(DistganError, match="x-0.tar"):
        check_files(shards)
    check_files(load_config("configs/dcgan_digits.yaml"))  # built-in data: nothing to read
