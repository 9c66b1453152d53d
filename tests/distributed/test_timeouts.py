"""Start-up and training get their own process-group timeouts (train.startup_timeout_s, then
train.collective_timeout_s from the first completed step on). Real Trainer, two gloo processes."""

import os

import torch

from tests.distributed.gloo import run_gloo


def _timeouts(rank, world_size, run_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    import torch.distributed.distributed_c10d as c10d

    from distgan.config import load_config
    from distgan.train.trainer import Trainer

    def pg_timeout():
        return c10d._get_default_group()._get_backend(torch.device("cpu")).options._timeout.total_seconds()

    cfg = load_config("configs/gan_ring.yaml", ["train.batch_size=8", "train.steps=2", "log.progress=false",
                                                "train.collective_timeout_s=37", f"run.dir={run_dir}"])
    trainer = Trainer(cfg)
    before = (trainer._timeout, pg_timeout())
    trainer.fit()
    return before, (trainer._timeout, pg_timeout())


def test_training_collectives_use_their_own_timeout_after_start_up(tmp_path):
    for before, after in run_gloo(_timeouts, 2, str(tmp_path / "run"), timeout=120):
        assert before[0] == ("train.startup_timeout_s", 1800)
        assert after == (("train.collective_timeout_s", 37), 37.0)
