"""Ctrl-C and corrupt checkpoints, through the real CLI.

Ctrl-C is sent as a terminal sends it: SIGINT to the whole foreground process group (the run is
started in its own session and signalled with os.killpg). The first SIGINT finishes the step on
every rank, writes a checkpoint and prints one line; the workers exit 130 and the rerun resumes
bitwise. A truncated newest checkpoint is passed over by both ranks alike (named, moved to
checkpoints/corrupt/) and the run resumes from the newest intact one. Timed checkpoints
(ckpt.every_minutes) land on every rank at the same step. (The corrupt-checkpoint cases one by one,
in one process: tests/train/test_checkpoint.py.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distgan.cli import EXIT_INTERRUPTED
from distgan.train import checkpoint, distributed
from tests.helpers import ROOT, TINY_DCGAN, _free_port, assert_bitwise_equal, cli_env, latest_state, run_cli

# No checkpoint by steps or by the clock before the Ctrl-C: the one it writes is the only one.
TRAIN = ["configs/dcgan_digits.yaml", *TINY_DCGAN, "log.progress=false", "log.every=5", "ckpt.every=0",
         "ckpt.every_minutes=0"]
STOP_LINE = re.compile(r"^interrupted \(Ctrl-C\) at step (\d+)/100000: checkpoint (\S+) written; "
                       r"resume with: (.+)$", re.M)


def _ctrl_c(run: Path, procs: int, exits: Path) -> tuple[int, str]:
    """Start `distgan train` for 100000 steps (under `accelerate launch` when procs > 1), press Ctrl-C
    once it has logged, and return (the exit code, its whole output)."""
    train = ["train", *TRAIN, "train.steps=100000", f"run.dir={run}"]
    if procs == 1:
        command = ["-m", "distgan", *train]
    else:  # each worker records the code distgan returned: the launcher's own code is torch's
        command = ["-m", "accelerate.commands.launch", "--config_file", str(ROOT / "launch/cpu.yaml"),
                   "--num_processes", str(procs), "--main_process_port", str(_free_port()),
                   str(Path(__file__).with_name("exit_recorder.py")), *train]
    env = dict(cli_env(cpu=procs > 1), DISTGAN_TEST_EXIT_DIR=str(exits))
    proc = subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not ((run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C: every process of the group
        out, _ = proc.communicate(timeout=60)  # the promise: out within a minute
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out


def _check_stop(out: str, run: Path, procs: int) -> int:
    """One stop line, no traceback, and the checkpoint it names at the step it names; returns the step."""
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    lines = STOP_LINE.findall(out)
    assert len(lines) == 1, out
    assert "stopped:" not in out and "stop requested" not in out, out  # Ctrl-C's line only
    step, path, command = int(lines[0][0]), Path(lines[0][1]), lines[0][2]
    assert step > 0 and path == checkpoint.find_latest(run / "checkpoints"), out
    assert path.name == checkpoint.step_dir_name(step) and latest_state(run)["step"] == step
    assert json.loads((path / "meta.json").read_text())["world_size"] == procs
    launcher = "accelerate launch --config_file" if procs > 1 else "distgan train"
    assert command.startswith(launcher) and f"run.dir={run}" in command, command
    return step


def test_ctrl_c_of_one_process_checkpoints_and_exits_130(tmp_path):
    assert EXIT_INTERRUPTED == distributed.EXIT_INTERRUPTED == 130  # the CLI's code, a second Ctrl-C's os._exit
    code, out = _ctrl_c(tmp_path / "run", 1, tmp_path)
    assert code == EXIT_INTERRUPTED, out
    _check_stop(out, tmp_path / "run", 1)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ctrl_c_of_two_processes_then_a_truncated_newest_checkpoint_resume_bitwise(tmp_path):
    """Ctrl-C at a step between checkpoints: every worker exits 130 (the launcher non-zero), one line,
    the checkpoint at that step. A newer checkpoint whose state.pt was then truncated is passed over
    by both ranks alike and moved aside, the run resumes from the Ctrl-C's checkpoint and ends
    bitwise where an uninterrupted run does; that run's timed checkpoints (ckpt.every_minutes tiny:
    one at every step) hold both ranks' files at every step."""
    run, exits = tmp_path / "run", tmp_path / "exits"
    exits.mkdir()
    code, out = _ctrl_c(run, 2, exits)
    assert code != 0, out
    assert {p.name: p.read_text() for p in exits.iterdir()} == {"rank0": "130", "rank1": "130"}, out
    step = _check_stop(out, run, 2)

    # The newest checkpoint truncated, as a full disk or a failed copy leaves it.
    root, stopped = run / "checkpoints", run / "checkpoints" / checkpoint.step_dir_name(step)
    newer = root / checkpoint.step_dir_name(step + 1)
    shutil.copytree(stopped, newer)
    state = newer / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    (root / "latest").write_text(newer.name)
    truncated = state.read_bytes()

    end = step + 3
    again = run_cli("train", *TRAIN, f"train.steps={end}", f"run.dir={run}", procs=2)
    out = again.stdout + again.stderr
    assert f"checkpoint {newer} is corrupt (state.pt has " in out and "truncated" in out, out
    assert f"resumed from {stopped} at step {step}" in again.stdout, out
    assert (root / "corrupt" / newer.name / "state.pt").read_bytes() == truncated  # set aside, not deleted
    assert [p.name for p in checkpoint.complete_checkpoints(root)] == [stopped.name, checkpoint.step_dir_name(end)]

    straight = tmp_path / "straight"
    run_cli("train", *TRAIN, f"train.steps={end}", f"run.dir={straight}", "ckpt.every_minutes=1e-9",
            "ckpt.keep=1000", procs=2)
    saved = checkpoint.complete_checkpoints(straight / "checkpoints")
    assert [checkpoint.step_of(p) for p in saved] == list(range(1, end + 1))  # by the clock, every step
    for path in saved:
        meta = json.loads((path / "meta.json").read_text())
        assert meta["world_size"] == 2 and meta["files"] == ["state.pt", "rank0.pt", "rank1.pt"]
        assert checkpoint.problem(path) is None
    assert_bitwise_equal(latest_state(run), latest_state(straight))
