"""Short runs of every shipped config (and of the game options) kept as golden results in
`golden.json`, as torchtitan keeps golden losses: a refactor of the trainer or of a game
that changes what is computed changes them (tests/golden/test_golden.py).

Each case keeps its losses per step and, for every tensor of its final weights (nets + EMA),
the float64 sum and L2 norm. These travel between machines: the CPU kernels torch picks
(AVX-512, AVX2 or none; oneDNN's ISA) change the last bits of every weight, so a bitwise digest
holds on one CPU kind only, while the statistics agree to tolerances measured across those
kernels (test_golden.py). Bitwise equality stays where it holds by construction on one machine:
resume vs uninterrupted, the same run twice.

`python -m tests.golden.cases --record [CASE ...]` rewrites the named cases (all by default)
from the current code: do it only for a change that is meant to alter training, and say so
in the commit. Without `--record` it prints each case's result.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from tests.helpers import TINY_DCGAN

STEPS = 4
HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden.json"
_COMMON = [f"train.steps={STEPS}", "log.every=1", "log.sample_every=0", "ckpt.every=0", "log.progress=false",
           "train.ema_start=1"]
_TINY = [o for o in TINY_DCGAN if not o.startswith("train.batch_size")] + ["train.batch_size=8"]
_BN_FREE = ["model.g.norm=none", "model.d.norm=none"]

CASES: dict[str, list[str]] = {
    "dcgan": ["configs/dcgan_digits.yaml", *_TINY],
    "lsgan": ["configs/lsgan_digits.yaml", *_TINY],
    "hinge": ["configs/hinge_digits.yaml", *_TINY],
    "wgan_clip": ["configs/wgan_digits.yaml", *_TINY],
    "wgangp": ["configs/wgangp_digits.yaml", *_TINY],
    "gan_mlp": ["configs/gan_mlp_digits.yaml", "train.batch_size=8", "data.resolution=8"],
    "ring": ["configs/gan_ring.yaml", "train.batch_size=32"],
    "grid": ["configs/gan_grid.yaml", "train.batch_size=32"],
    "stacked": ["configs/dcgan_stacked_digits.yaml", *_TINY],
    "r1_eager": ["configs/dcgan_digits.yaml", *_TINY, *_BN_FREE, "game.r1_gamma=1.0"],
    "r1_lazy": ["configs/dcgan_digits.yaml", *_TINY, *_BN_FREE, "game.r1_gamma=1.0", "game.r1_interval=2"],
    "smoothing_accum": ["configs/dcgan_digits.yaml", *_TINY, "game.label_smoothing=0.1", "train.grad_accum=2"],
    "bf16": ["configs/dcgan_digits.yaml", *_TINY, "train.precision=bf16"],
    "sync_bn": ["configs/dcgan_digits.yaml", *_TINY, "model.sync_bn=true"],
}


def run_case(name: str, run_dir: Path) -> dict:
    """Train case `name` in this process; its losses per step, precision and weight statistics."""
    import torch

    from distgan.train.distributed import reset_accelerate as _reset_accelerate
    from distgan.cli import main
    from distgan.train.devices import resolve_precision
    from tests.helpers import flat_tensors, latest_state, metrics

    torch.set_num_threads(1)
    # On the CPU on any machine (the golden numbers are CPU float32 / bf16 numbers), with
    # Accelerate's process-wide state made anew for it and for whatever runs next.
    saved = os.environ.get("DISTGAN_CPU")
    os.environ["DISTGAN_CPU"] = "1"
    _reset_accelerate()
    try:
        code = main(["train", *CASES[name], *_COMMON, f"run.dir={run_dir}"])
    finally:
        _reset_accelerate()
        if saved is None:
            os.environ.pop("DISTGAN_CPU")
        else:
            os.environ["DISTGAN_CPU"] = saved
    assert code == 0, f"case {name} exited {code}"
    losses = {m["step"]: {k: v for k, v in m.items() if k.startswith("loss/")} for m in metrics(run_dir)}
    state = latest_state(run_dir)
    return {"losses": {str(k): v for k, v in losses.items()},
            # As the trainer resolved it: golden runs are CPU runs, where "auto" is float32 ("no").
            "precision": resolve_precision(state["config"]["train"]["precision"], torch.device("cpu")),
            "weights": weight_stats(flat_tensors({"nets": state["nets"], "ema": state["ema"]}))}


def weight_stats(tensors: dict) -> dict[str, list[float]]:
    """[sum, L2 norm] of every tensor, in float64: a portable fingerprint of the weights."""
    out = {}
    for key, t in sorted(tensors.items()):
        t64 = t.detach().double()
        out[key] = [t64.sum().item(), t64.norm().item()]
    return out


def main(argv: list[str]) -> int:
    record = "--record" in argv
    names = [a for a in argv if not a.startswith("--")] or list(CASES)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results[name] = run_case(name, Path(tmp) / name)
            print(name, json.dumps(results[name]["losses"][str(STEPS)]), flush=True)
    if record:
        golden = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {"cases": {}}
        golden["cases"].update(results)
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
