"""The speed options and meters end to end, tiny: train.compile and train.channels_last train what eager,
contiguous training trains (losses within float tolerance), the throughput meter's keys reach
metrics.jsonl, and `distgan bench overhead` runs on 1 and 2 gloo processes (nothing timed is asserted)."""

import pytest

from distgan.errors import ConfigError
from tests.helpers import TINY_DCGAN, metrics, run_cli

TRAIN = ["train", "configs/dcgan_digits.yaml", *TINY_DCGAN, "train.steps=3", "log.every=1", "log.sample_every=0",
         "ckpt.every=0"]
LOSSES = ("loss/D/real", "loss/D/fake", "loss/G/adv")


def _losses(run):
    return [[m[k] for k in LOSSES] for m in metrics(run)]


def _assert_same_losses(a, b):
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert x == pytest.approx(y, rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_compiled_steps_give_the_eager_losses(tmp_path):
    run_cli(*TRAIN, f"run.dir={tmp_path / 'eager'}", cpu=True)
    run_cli(*TRAIN, "train.compile=true", f"run.dir={tmp_path / 'compiled'}", cpu=True, timeout=600)
    _assert_same_losses(_losses(tmp_path / "eager"), _losses(tmp_path / "compiled"))


@pytest.mark.slow
def test_channels_last_gives_the_contiguous_losses_and_the_meter_logs_its_split(tmp_path):
    run_cli(*TRAIN, f"run.dir={tmp_path / 'nchw'}", cpu=True)
    run_cli(*TRAIN, "train.channels_last=true", f"run.dir={tmp_path / 'nhwc'}", cpu=True)
    _assert_same_losses(_losses(tmp_path / "nchw"), _losses(tmp_path / "nhwc"))
    lines = metrics(tmp_path / "nchw")
    # The first step is the FLOP-counted one; the lines after it carry the meter.
    assert "perf/img_per_s" not in lines[0]
    for m in lines[1:]:
        split = {k for k in m if k.startswith("perf/ms_per_step/")}
        assert {f"perf/ms_per_step/{k}" for k in ("data", "D", "G", "ema", "other")} <= split, split
        assert all(m[k] >= 0 for k in split if not k.endswith("other"))
        assert m["perf/flop_per_step"] > 0 and m["perf/gflop_per_s"] > 0


def test_compile_without_a_cpu_compiler_is_a_config_error(monkeypatch):
    import torch
    from torch import nn

    from distgan.train.devices import compile_nets

    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    with pytest.raises(ConfigError, match="train.compile=true"):
        compile_nets({"G": nn.Linear(2, 2)}, torch.device("cpu"))


@pytest.mark.slow
def test_bench_overhead_runs_in_its_smallest_form():
    proc = run_cli("bench", "overhead", "--procs", "1", "2", "--rounds", "1", "--steps", "1", "--warmup", "0",
                   "--", *TINY_DCGAN, cpu=True)
    out = proc.stdout
    assert "load average at start" in out and "load average at end" in out
    for procs in (1, 2):
        assert f"round 0 procs {procs}: distgan" in out, out
        assert f"| {procs} | distgan |" in out and f"| {procs} | bare |" in out, out
    assert "Scaling (global img/s at N processes / at 1, per round):" in out
