"""Large-batch training: with gradient accumulation, DDP all-reduces the gradients once per optimizer
step of each stepped net, never per micro-batch, and never for the frozen nets. Counted with a DDP
communication hook (called once per gradient bucket reduction) on the real Trainer's DDP-wrapped nets,
two real gloo processes, one BigGAN step (D twice: n_critic 2, then G once)."""

import os

import pytest

from tests.distributed.gloo import run_gloo
from tests.helpers import TINY_DCGAN


def _count_all_reduces(rank, world_size, run_dir, accum):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.nn.parallel import DistributedDataParallel

    from distgan.config import load_config
    from distgan.train.trainer import Trainer

    # Every bucket reduction goes through the net's communication hook: DDP's default all-reduce
    # (registered below when the trainer sets none), or the trainer's own one, wrapped to count it.
    reduced: dict[int, list[int]] = {}  # id(DDP module) -> index of each bucket reduced
    register = DistributedDataParallel.register_comm_hook

    def counting_register(ddp, state, hook):
        seen = reduced.setdefault(id(ddp), [])

        def counted(state, bucket):
            seen.append(bucket.index())
            return hook(state, bucket)

        return register(ddp, state, counted)

    DistributedDataParallel.register_comm_hook = counting_register
    cfg = load_config("configs/biggan_digits.yaml", [
        *TINY_DCGAN, "model.g.width=4", "model.d.width=4", "game.shared_dim=8", "train.batch_size=4",
        f"train.grad_accum={accum}", "log.progress=false", f"run.dir={run_dir}"])
    trainer = Trainer(cfg)
    for net in trainer.wrapped.values():
        if id(net) not in reduced:
            net.register_comm_hook(None, allreduce_hook)
    trainer.train_step()
    seen = {name: reduced[id(net)] for name, net in trainer.wrapped.items()}
    # Bucket reductions per net, and the buckets DDP formed (one for nets this small; counted, not assumed).
    return {"counts": {n: len(s) for n, s in seen.items()}, "buckets": {n: len(set(s)) for n, s in seen.items()},
            "step": trainer.step}


@pytest.mark.slow  # four gloo processes in all, each building a Trainer
def test_gradients_are_all_reduced_once_per_optimizer_step_not_per_micro_batch(tmp_path):
    for accum in (4, 1):
        results = run_gloo(_count_all_reduces, 2, str(tmp_path / f"run{accum}"), accum, timeout=240)
        for r in results:
            assert r["step"] == 1
            b = r["buckets"]
            assert b["D"] >= 1 and b["G"] >= 1
            # D: 2 optimizer steps (n_critic), G: 1 -- whatever the accumulation (4 micro-batches each).
            assert r["counts"] == {"D": 2 * b["D"], "G": 1 * b["G"]}, (accum, r)
