"""A run resumed on another number of processes continues as the uninterrupted run, through the real
CLI and `accelerate launch` (gloo), with the same global batch on both sides (train.batch_size 8 on
2 processes, 16 on 1).

- built-in digits: 2 processes -> 1 and 1 -> 2 end where the uninterrupted 1-process run does, to
  the tolerance tests/distributed/test_parity.py compares 1 and 2 processes with;
- shards: each rank knows the positions of the streams it reads; the checkpoint of a 2-process run
  gathers them into every rank file, and the run resumed on 1 process ends at the position an
  uninterrupted 1-process read of the same `data.streams` reaches (the order itself: the data
  tests, tests/data/test_stream.py).
"""

import pytest
import torch

from distgan.train import checkpoint
from tests.data.util import pack_digits, source
from tests.distributed.test_parity import BN_FREE
from tests.helpers import flat_tensors, latest_state, metrics, run_cli

GLOBAL_BATCH = 16


def _train(run, base, procs, steps, *extra):
    return run_cli("train", *base, f"train.batch_size={GLOBAL_BATCH // procs}", f"train.steps={steps}",
                   "log.every=1", f"run.dir={run}", *extra, procs=procs, cpu=True)


def _says_exact(proc, old, new):
    assert f"resuming on {new} process(es) a checkpoint written by {old}: exact" in proc.stdout, proc.stdout


def _assert_same_training(whole, run, steps):
    """Losses of the steps `run` logged and the final weights, as the 1-vs-2-process parity tests."""
    m1 = {m["step"]: m for m in metrics(whole)}
    m2 = metrics(run)
    assert [m["step"] for m in m2] == steps
    for b in m2:
        for key in ("loss/D/real", "loss/D/fake", "loss/G/adv"):
            assert m1[b["step"]][key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (b["step"], key)
    w1, w2 = flat_tensors(latest_state(whole)["nets"]), flat_tensors(latest_state(run)["nets"])
    assert w1.keys() == w2.keys()
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], rtol=1e-4, atol=1e-5, msg=key)
    # Guard against a vacuous pass: the steps after the resume trained.
    assert m2[-1]["loss/D/real"] != m1[2]["loss/D/real"]


@pytest.mark.numeric
def test_builtin_digits_resume_on_one_process_and_on_two(tmp_path):
    whole = tmp_path / "whole"  # 1 process, checkpoints at steps 2 and 4
    _train(whole, BN_FREE, 1, 4, "ckpt.every=2", "ckpt.keep=2")
    two_to_one = tmp_path / "2to1"
    _train(two_to_one, BN_FREE, 2, 2, "ckpt.every=0")
    _says_exact(_train(two_to_one, BN_FREE, 1, 4, "ckpt.every=0"), 2, 1)
    _assert_same_training(whole, two_to_one, [1, 2, 3, 4])
    one_to_two = tmp_path / "1to2"  # from the uninterrupted run's step-2 checkpoint
    _says_exact(_train(one_to_two, BN_FREE, 2, 4, "ckpt.every=0",
                       f"train.resume={whole / 'checkpoints' / 'step_0000002'}"), 1, 2)
    _assert_same_training(whole, one_to_two, [3, 4])


def test_shards_positions_are_gathered_and_resume_on_one_process(tmp_path):
    """48 digits in 8 shards of 6, data.streams=2 (chunks of 8): 3 global batches per epoch. The stop
    after 2 leaves each stream mid-shard, each rank of 2 knowing one; steps 3..5 cross an epoch."""
    shards = pack_digits(tmp_path, 48, 6)
    base = [*BN_FREE, "data.name=shards", f"data.shards={shards}", "data.streams=2", "data.shuffle_buffer=4",
            "ckpt.every=0"]
    ref = source(str(shards), batch=GLOBAL_BATCH, streams=2, shuffle_buffer=4, resolution=8)
    expected = {}
    for k in range(1, 6):
        ref.next_batch()
        expected[k] = ref.state_dict()
    run = tmp_path / "run"
    _train(run, base, 2, 2)
    step2 = checkpoint.find_latest(run / "checkpoints")
    mine = [checkpoint.load(step2, r)[1]["data"] for r in (0, 1)]
    assert mine[0] == mine[1] == expected[2]  # every rank file: both streams' positions
    assert all(p is not None and p[1] % 6 for p in expected[2]["positions"])  # mid-shard: a sharp check
    _says_exact(_train(run, base, 1, 5), 2, 1)
    assert checkpoint.load(checkpoint.find_latest(run / "checkpoints"), 0)[1]["data"] == expected[5]
    assert expected[5]["epoch"] == 1 and [m["data/skipped"] for m in metrics(run)] == [0] * 5


@pytest.mark.parametrize("overrides,says", [
    (["model.g.norm=none", "model.d.norm=none"], ": exact (the global batch of 8"),
    (["model.sync_bn=true"], ": exact (the global batch of 8"),
    ([], ": not exact: per-process BatchNorm (model.sync_bn=false, in G)"),
], ids=["bn_free", "cross_replica_bn", "local_bn"])
def test_the_resume_line_says_what_is_not_exact(tmp_path, monkeypatch, overrides, says):
    """What the line says for the nets (checked on a Trainer built in this process): exact, unless
    per-process BatchNorm statistics or another global batch make the run another computation."""
    from distgan.config import load_config
    from distgan.train.distributed import reset_accelerate
    from distgan.train.state import world_change_line
    from distgan.train.trainer import Trainer
    from tests.helpers import ROOT, TINY_DCGAN

    monkeypatch.setenv("DISTGAN_CPU", "1")
    reset_accelerate()
    cfg = load_config(str(ROOT / "configs/dcgan_digits.yaml"),
                      [*TINY_DCGAN, *overrides, "log.progress=false", "eval.every=0", f"run.dir={tmp_path}"])
    trainer = Trainer(cfg)
    try:
        line = world_change_line(trainer, 2, {"global_batch": 8})
        assert line.startswith("resuming on 1 process(es) a checkpoint written by 2") and says in line, line
        other = world_change_line(trainer, 2, {"global_batch": 16})
        assert ": not exact: the global batch changed from 16 to 8" in other, other
    finally:
        trainer.log.close()
        reset_accelerate()
