"""Stop requests without Slurm: SIGTERM to a worker, SIGTERM to the `accelerate
launch` launcher (torchrun forwards it), and the stop file the sbatch scripts use
for SIGUSR1. Each ends with a complete checkpoint at the step every rank stopped
at, and the next run resumes there."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distgan.cli import EXIT_STOPPED
from distgan.train import checkpoint
from tests.helpers import ROOT, TINY_DCGAN, _free_port, cli_env, latest_state, run_cli

TRAIN = ["configs/dcgan_digits.yaml", *TINY_DCGAN, "log.progress=false", "log.every=5", "ckpt.every=0"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["sigterm-worker", "sigterm-launcher", "stop-file"])
def test_stop_request_checkpoints_and_the_rerun_resumes(tmp_path, how):
    run, stop_file, exits = tmp_path / "run", tmp_path / "STOP", tmp_path / "exits"
    exits.mkdir()
    train = ["train", *TRAIN, "train.steps=100000", f"run.dir={run}"]
    procs = 1 if how == "sigterm-worker" else 2
    # 2 gloo processes are CPU processes on any machine, as run_cli makes them.
    env = dict(cli_env(cpu=procs > 1), DISTGAN_STOP_FILE=str(stop_file), DISTGAN_TEST_EXIT_DIR=str(exits))
    if procs == 1:
        command = ["-m", "distgan", *train]
    else:  # each worker records the code distgan returned: the launcher's own code is torch's
        command = ["-m", "accelerate.commands.launch", "--config_file", str(ROOT / "launch/cpu.yaml"),
                   "--num_processes", "2", "--main_process_port", str(_free_port()),
                   str(Path(__file__).with_name("exit_recorder.py")), *train]
    proc = subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ((run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.1)
        if how == "stop-file":
            stop_file.touch()
        else:
            proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Every worker exits EXIT_STOPPED; what the launcher makes of that is torch's (exit_recorder.py).
    if procs == 1:
        assert proc.returncode == EXIT_STOPPED, out
    else:
        recorded = {p.name: p.read_text() for p in exits.iterdir()}
        assert recorded == {"rank0": str(EXIT_STOPPED), "rank1": str(EXIT_STOPPED)}, out
    stopped = re.search(r"stopped: step (\d+)/100000", out)
    assert stopped, out
    step = int(stopped.group(1))
    last = checkpoint.find_latest(run / "checkpoints")
    assert last.name == checkpoint.step_dir_name(step)
    assert json.loads((last / "meta.json").read_text())["world_size"] == procs
    assert latest_state(run)["step"] == step

    again = run_cli("train", *TRAIN, f"train.steps={step + 3}", f"run.dir={run}", procs=procs)
    assert f"resumed from {last} at step {step}" in again.stdout
    assert latest_state(run)["step"] == step + 3
