"""CUDA check of the sync-free non-finite guard: D's loss is NaN at steps 3 and 4 (one process, fused Adam)."""
import math
import sys

import torch

from distgan.config import load_config
from distgan.games import GAMES
from distgan.games.gan import AdversarialGame
from distgan.train.trainer import Trainer


class NaNAtSteps(AdversarialGame):
    calls = 0

    def d_loss(self, batch, ctx):
        terms = super().d_loss(batch, ctx)
        if type(self).calls in (2, 3):
            terms["real"] = terms["real"] * math.nan
        type(self).calls += 1
        return terms


GAMES["nan_at_steps"] = NaNAtSteps
cfg = load_config("configs/gan_mlp_digits.yaml", ["game.name=nan_at_steps", "data.resolution=8", "train.batch_size=8",
                                                  "log.progress=false", "ckpt.every=0", "train.steps=6",
                                                  f"run.dir={sys.argv[1]}"])
trainer = Trainer(cfg)
opt = trainer.optimizers["d"]
trainer.fit()
d = torch.cat([p.detach().flatten() for p in trainer.nets["D"].parameters()])
print(f"device {trainer.device}, fused {opt.defaults.get('fused')}, steps {trainer.step}, skipped {trainer.skipped_steps} "
      f"(expected 2), D finite {bool(torch.isfinite(d).all())}, D adam step {opt.state[next(iter(opt.state))]['step'].item()} "
      f"(expected 4 of 6)")
