"""Where does WGAN-GP resume stop being bitwise on CUDA? (a device check, not a pytest test)

For each precision given (e.g. `bf16,no`) and cuDNN on/off, a tiny WGAN-GP with train.deterministic=true
runs 4 steps whole, 3 steps whole, and 2 + resume + 1 + resume + 1; prints the first step whose logged
losses differ and the tensors (nets, optimizers, EMA, game state) that differ at steps 3 and 4.

    python tests/gpu/gp_resume_diag.py bf16,no        # from the project root, on a GPU machine
"""
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, ".")
from tests.helpers import TINY_DCGAN, latest_state, training_tensors  # noqa: E402

W = Path("/tmp/gp_resume_diag")


def train(tag: str, extra: list[str], steps: int, env: dict) -> None:
    cmd = [sys.executable, "tests/gpu/cli_with_switches.py", "train", "configs/wgangp_digits.yaml", *TINY_DCGAN,
           "ckpt.every=0", "log.every=1", *extra, f"train.steps={steps}", f"run.dir={W / tag}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    if proc.returncode:
        print(tag, "FAILED", proc.stderr[-1500:])


def losses(tag: str) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k.startswith("loss/")}
            for line in (W / tag / "metrics.jsonl").read_text().splitlines() if line]


def compare(name: str, a: str, b: str) -> None:
    la, lb = losses(a), losses(b)
    first = next((i + 1 for i, (x, y) in enumerate(zip(la, lb)) if x != y), None)
    ta, tb = training_tensors(latest_state(W / a)), training_tensors(latest_state(W / b))
    differ = [k for k in ta if not (ta[k].shape == tb[k].shape and bool((ta[k] == tb[k]).all()))]
    print(f"{name}: first step whose logged losses differ: {first}; tensors differing at the end: "
          f"{len(differ)}/{len(ta)} {differ[:3]}", flush=True)


def case(precision: str, cudnn: str) -> str:
    extra = [f"train.precision={precision}", "train.deterministic=true", "game.n_critic=2"]
    env = {"DIAG_CUDNN_OFF": "1"} if cudnn == "off" else {}
    tag = f"{precision}_cudnn_{cudnn}"
    with ThreadPoolExecutor(2) as pool:
        wholes = [pool.submit(train, tag + "_w4", extra, 4, env), pool.submit(train, tag + "_w3", extra, 3, env)]
        train(tag + "_s", extra, 2, env)
        train(tag + "_s", extra, 3, env)  # the first step after a resume ...
        [w.result() for w in wholes]
        compare(tag + " 3 whole vs 2 + resume + 1", tag + "_w3", tag + "_s")
        train(tag + "_s", extra, 4, env)  # ... and the second
    return tag


if __name__ == "__main__":
    t0 = time.time()
    cases = [(precision, cudnn) for precision in sys.argv[1].split(",") for cudnn in ("on", "off")]
    with ThreadPoolExecutor(8) as pool:
        for tag in pool.map(lambda c: case(*c), cases):
            compare(tag + " 4 whole vs 2 + resume + 2", tag + "_w4", tag + "_s")
    print(f"[{time.time() - t0:.0f}s]", flush=True)
