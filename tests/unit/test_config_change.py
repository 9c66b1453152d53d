"""distgan/config_change.py: which config changes a resume refuses (the training trajectory) and
which it accepts, the message, the global batch, the learning-rate schedule of the steps taken,
and the run's config history. Plain data, no training (tests/e2e/test_resume_config.py resumes
real runs through the CLI)."""

from __future__ import annotations

import pytest
import yaml

from distgan.config import ConfigError, derive_batch, load_config
from distgan.config_change import (
    ALLOW_FLAG,
    check_resume,
    compare,
    history,
    lr_scale,
    rule_for,
    same_schedule_until,
    write_run_config,
)
from tests.helpers import ROOT, TINY_DCGAN

CONFIG = str(ROOT / "configs/dcgan_digits.yaml")


def cfg(*overrides: str):
    return load_config(CONFIG, [*TINY_DCGAN, *overrides])


def changes(old: list[str], new: list[str], *, step: int = 100, old_world: int = 1, new_world: int = 1):
    return {c.key: c for c in compare(cfg(*old).to_dict(), old_world, cfg(*new).to_dict(), new_world, step)}


@pytest.mark.parametrize("key", ["model.g.width", "model.sync_bn", "game.loss", "data.name", "data.resolution",
                                 "data.shards", "augment.name", "optim.d.lr", "optim.g.betas", "optim.g.name",
                                 "train.seed", "train.grad_accum", "train.precision", "train.tf32",
                                 "train.deterministic", "train.ema_decay", "train.ema_start"])
def test_keys_that_change_the_trajectory(key):
    assert rule_for(key).trajectory is True, key


@pytest.mark.parametrize("key", ["run.name", "run.dir", "train.resume", "log.every", "log.wandb", "log.progress",
                                 "eval.every", "eval.metrics", "ckpt.every", "ckpt.keep", "train.max_bad_steps",
                                 "train.collective_timeout_s", "train.startup_timeout_s", "train.compile",
                                 "train.channels_last", "optim.d.fused", "data.max_skipped_fraction"])
def test_keys_that_do_not(key):
    assert rule_for(key).trajectory is False, key


def test_an_unknown_key_changes_the_trajectory():
    assert rule_for("train.some_key_added_later").trajectory is True
    assert rule_for("newsection.key").trajectory is True
    assert "without a rule" in rule_for("newsection.key").what


def test_loader_workers_leave_the_trajectory_as_it_is():
    # Shards are read through the canonical streams kept from the run's first start (data.streams),
    # so the count of workers reading them does not change the order.
    assert not changes([], ["data.num_workers=2"])["data.num_workers"].trajectory
    shards = ["data.name=shards", "data.shards=x.tar"]
    assert not changes(shards, [*shards, "data.num_workers=2"])["data.num_workers"].trajectory


def test_a_changed_optimizer_is_refused_with_each_key_and_the_flag():
    old, new = cfg().to_dict(), cfg("optim.d.lr=0.0001", "game.loss=hinge", "log.every=7").to_dict()
    with pytest.raises(ConfigError) as err:
        check_resume(old, 1, new, 1, step=40, source="run/checkpoints/step_0000040")
    message = str(err.value)
    assert "\n" not in message
    assert "run/checkpoints/step_0000040 (step 40)" in message
    assert "optim.d.lr: 0.0002 -> 0.0001" in message and "game.loss: nonsaturating -> hinge" in message
    assert ALLOW_FLAG in message and "log.every" not in message  # only the refused keys are listed


def test_the_flag_lets_the_changes_through_and_each_is_said():
    old, new = cfg().to_dict(), cfg("optim.d.lr=0.0001", "log.every=7").to_dict()
    check = check_resume(old, 1, new, 1, step=40, source="ckpt", allow=True)
    assert check.allowed
    lines = check.lines()
    assert len(lines) == 2 and all(line.startswith("config change at step 40: ") for line in lines)
    assert any("optim.d.lr: 0.0002 -> 0.0001 (allowed by --allow-config-change" in line for line in lines)
    assert any("log.every: 50 -> 7 (accepted; logging only)" in line for line in lines)
    assert "optim.d.lr: 0.0002 -> 0.0001 (allowed by --allow-config-change)" in check.note()


def test_accepted_changes_need_no_flag():
    old = cfg().to_dict()
    new = cfg("log.every=7", "eval.every=100", "ckpt.every=10", "run.name=other", "train.resume=never",
              "train.collective_timeout_s=30", "train.steps=9000").to_dict()
    check = check_resume(old, 1, new, 1, step=40, source="ckpt")
    assert not check.allowed
    assert {c.key for c in check.changes} == {"log.every", "eval.every", "ckpt.every", "run.name", "train.resume",
                                              "train.collective_timeout_s", "train.steps"}
    assert check_resume(old, 1, cfg().to_dict(), 1, step=40, source="ckpt").changes == []


def test_the_global_batch_is_compared_not_the_per_process_one():
    # 8 on 1 process -> 4 on 2: the same global batch, accepted
    same = changes(["train.batch_size=8"], ["train.batch_size=4"], old_world=1, new_world=2)
    assert set(same) == {"train.batch_size"} and not same["train.batch_size"].trajectory
    assert "the global batch stays 8" in same["train.batch_size"].what
    # 8 per process on 1 -> on 2: the global batch doubles, refused, and the key that keeps it is named
    with pytest.raises(ConfigError, match=r"global batch: 8 \(8 x 1 process\(es\)\) -> 16 \(8 x 2 process\(es\)\) "
                                          r"\(set train.global_batch_size=8 to keep it\)"):
        check_resume(cfg().to_dict(), 1, cfg().to_dict(), 2, step=4, source="ckpt")
    # train.global_batch_size stated on resume, the same global batch: accepted
    new = cfg("train.global_batch_size=8")
    derive_batch(new, 2)
    check = check_resume(cfg().to_dict(), 1, new.to_dict(), 2, step=4, source="ckpt")
    assert {c.key: c.trajectory for c in check.changes} == {"train.batch_size": False,
                                                             "train.global_batch_size": False}


def test_the_per_process_batch_is_derived_from_the_global_batch():
    c = cfg("train.global_batch_size=12")
    derive_batch(c, 3)
    assert c.train.batch_size == 4
    unset = cfg("train.batch_size=8")
    derive_batch(unset, 3)
    assert unset.train.batch_size == 8  # 0: train.batch_size is per process, as given
    with pytest.raises(ConfigError, match=r"train.global_batch_size=12 does not divide among 5 processes"):
        derive_batch(cfg("train.global_batch_size=12"), 5)
    # the derived batch is checked as a given one: 4 per process cannot be packed in threes
    with pytest.raises(ConfigError, match="model.d.packing=3 must divide the per-process batch"):
        derive_batch(cfg("train.global_batch_size=12", "model.d.packing=3", "train.batch_size=6"), 3)
    with pytest.raises(ConfigError, match="train.global_batch_size must be >= 0"):
        cfg("train.global_batch_size=-8")


def test_train_steps_is_accepted_while_the_learning_rate_of_the_steps_taken_stays():
    # constant learning rate: any length
    assert not changes([], ["train.steps=9000"])["train.steps"].trajectory
    # decay from half the steps: 100 -> 200 steps resumed at step 40 (no step decayed yet under either)
    decay = ["train.lr_decay_start=0.5", "train.steps=100"]
    assert not changes(decay, [*decay, "train.steps=200"], step=40)["train.steps"].trajectory
    # ... at step 60, steps 50-59 decayed under the old schedule and would not have under the new one
    late = changes(decay, [*decay, "train.steps=200"], step=60)["train.steps"]
    assert late.trajectory and "lr_decay_start" in late.what
    # the decay moved, before the run got there: accepted; after: refused
    assert not changes(decay, ["train.lr_decay_start=0.8", "train.steps=100"], step=50)["train.lr_decay_start"].trajectory
    assert changes(decay, ["train.lr_decay_start=0.8", "train.steps=100"], step=52)["train.lr_decay_start"].trajectory


def test_the_schedule_comparison_uses_the_trainers_learning_rate():
    from distgan.train.optimizers import lr_scale as trainers

    for steps in (1, 2, 7, 100):
        for start in (0.0, 0.25, 0.5, 0.9, 1.0):
            assert [lr_scale(s, steps, start) for s in range(steps)] == [trainers(s, steps, start) for s in range(steps)]
    assert same_schedule_until(1, (1, 0.25), (2, 0.25))  # the CycleGAN parity test's 1 + 1 steps
    assert not same_schedule_until(2, (2, 0.25), (4, 0.25))


def test_a_key_added_since_the_checkpoint_compares_as_its_default():
    old = cfg().to_dict()
    del old["train"]["global_batch_size"]  # a checkpoint written before the key existed
    assert compare(old, 1, cfg().to_dict(), 1, 4) == []
    old["train"]["obsolete"] = 1  # a key removed since: the old config no longer loads; shown as is
    gone = {c.key: c for c in compare(old, 1, cfg().to_dict(), 1, 4)}
    assert str(gone["train.obsolete"]) == "train.obsolete: 1 -> (absent)" and gone["train.obsolete"].trajectory


def test_history_keeps_every_config_and_overwrites_none(tmp_path):
    first = cfg("log.every=2")
    assert write_run_config(tmp_path, first, 0, None).name == "0001_step_0000000.yaml"
    assert write_run_config(tmp_path, first, 0, None) is None  # the same config: no entry
    entry = tmp_path / "config_history" / "0001_step_0000000.yaml"
    kept = entry.read_bytes()
    assert kept.startswith(b"# distgan config 1, in force from step 0: the run's first config\n")
    second = cfg("log.every=3")
    check = check_resume(first.to_dict(), 1, second.to_dict(), 1, step=4, source="ckpt/step_0000004")
    path = write_run_config(tmp_path, second, 4, check)
    assert path.name == "0002_step_0000004.yaml"
    assert path.read_text().splitlines()[0] == ("# distgan config 2, in force from step 4: resumed from "
                                                "ckpt/step_0000004 at step 4; changed: log.every: 2 -> 3")
    assert yaml.safe_load(path.read_text()) == yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["log"]["every"] == 3
    # a start before any checkpoint, with another config: a new entry at step 0, the first one kept
    assert write_run_config(tmp_path, first, 0, None).name == "0003_step_0000000.yaml"
    assert entry.read_bytes() == kept
    assert [(n, s) for n, s, _ in history(tmp_path)] == [(1, 0), (2, 4), (3, 0)]
    assert "started again from step 0" in (tmp_path / "config_history" / "0003_step_0000000.yaml").read_text()
