"""The processes of a run: collectives (no-ops alone, summed/maxed/gathered over real gloo ranks), the
votes that ride with DDP's gradient all-reduce, stop requests, Ctrl-C, timed checkpoints, timeouts and a
lost peer named as such."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from distgan.errors import TrainingError
from distgan.train import distributed
from distgan.train.distributed import STOP_FILE_ENV, Agreed, Collectives, Votes, launch_command, wrap_ddp
from tests.distributed.gloo import run_gloo
from tests.helpers import ROOT, cli_env

CPU = torch.device("cpu")


def _alone() -> Collectives:
    return Collectives(0, 1, CPU, startup_timeout_s=600, collective_timeout_s=60)


def test_alone_collectives_are_identities_and_nets_stay_unwrapped():
    comm = _alone()
    t = torch.tensor([1.0, 5.0])
    assert comm.all_reduce_sum(t) is t and comm.all_reduce_max(t) is t and t.tolist() == [1.0, 5.0]
    net = nn.Linear(2, 2)
    assert comm.wrap({"G": net})["G"] is net and not comm.ddp and not comm.votes
    assert wrap_ddp(net, CPU, 1) is net


def test_stop_requests_by_signal_and_by_file(tmp_path, monkeypatch):
    monkeypatch.delenv(STOP_FILE_ENV, raising=False)
    comm = _alone()
    assert comm.stop_requested() is False and comm.stop_asked().item() == 0.0
    previous = signal.getsignal(signal.SIGUSR1)
    with comm.catching_stop_signals():
        os.kill(os.getpid(), signal.SIGUSR1)  # handled: asks for a stop instead of ending the process
        assert comm.stop_requested() is True
    assert signal.getsignal(signal.SIGUSR1) == previous
    stop = tmp_path / "stop"
    monkeypatch.setenv(STOP_FILE_ENV, str(stop))
    comm = _alone()
    assert comm.stop_requested() is False
    stop.touch()
    assert comm.stop_requested() is True and comm.agreed == Agreed(stop=True)  # a stop, not Ctrl-C: exit 75


def test_the_sigints_of_one_ctrl_c_count_once_as_a_stop():
    comm = _alone()
    comm.interrupt_window_s = 1e9  # every SIGINT below falls within the window of the first
    previous = signal.getsignal(signal.SIGINT)
    with comm.catching_stop_signals():
        for _ in range(3):  # the terminal's, the launcher's forwarded one, ...: no KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)  # the launcher's SIGTERM to a worker, within the window too
        assert comm.stop_requested() is True and comm.agreed == Agreed(stop=True, interrupt=True)
    assert signal.getsignal(signal.SIGINT) == previous
    assert distributed.EXIT_INTERRUPTED == 128 + signal.SIGINT


@pytest.mark.parametrize("second", ["SIGINT", "SIGTERM"])  # SIGTERM: a second Ctrl-C as torchrun passes it on
def test_ctrl_c_again_after_the_window_exits_at_once_with_130_and_one_line(tmp_path, second):
    script = textwrap.dedent(f"""
        import os, signal, time, torch
        from distgan.train.distributed import Collectives
        comm = Collectives(0, 1, torch.device("cpu"), startup_timeout_s=60, collective_timeout_s=60)
        comm.interrupt_window_s = 0.0  # any second signal comes after the window
        with comm.catching_stop_signals({str(tmp_path)!r}):
            os.kill(os.getpid(), signal.SIGINT)
            assert comm.stop_requested()
            print("first SIGINT: a stop request", flush=True)
            os.kill(os.getpid(), signal.{second})
            time.sleep(60)
        print("still running")
        """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=cli_env(cpu=True), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 130, (proc.stdout, proc.stderr)
    assert proc.stdout == "first SIGINT: a stop request\n"
    assert proc.stderr.splitlines() == ["distgan: Ctrl-C again: exiting now without a checkpoint of this step; "
                                        "the newest complete one is none yet"]


def test_timed_checkpoints_by_the_clock_of_rank_0_alone():
    comm = _alone()
    assert comm.stop_requested() is False and comm.agreed == Agreed()  # no clock started: none due
    comm.start_save_clock(60.0)
    assert comm.stop_requested() is False and comm.agreed.save is False  # 60 s from now
    comm.last_save -= 61.0  # as if 61 s passed
    assert comm.stop_requested() is False and comm.agreed == Agreed(save=True)
    comm.saved()
    comm.stop_requested()
    assert comm.agreed.save is False
    other = Collectives(1, 2, CPU, startup_timeout_s=600, collective_timeout_s=60)
    other.start_save_clock(60.0)
    other.last_save -= 61.0
    assert other.requests().tolist() == [0.0, 0.0, 0.0]  # rank 1's clock never votes


def test_the_command_that_resumes(monkeypatch):
    for name in ("TORCHELASTIC_RUN_ID", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    argv = ["train", "configs/dcgan_digits.yaml", "run.dir=runs/my run", "train.resume=runs/x/step_0000100"]
    assert launch_command(argv) == ("distgan train configs/dcgan_digits.yaml 'run.dir=runs/my run' "
                                    "train.resume=auto")


def test_the_training_timeout_replaces_the_startup_one_once():
    comm = _alone()
    assert comm.timeout == ("train.startup_timeout_s", 600)
    comm.enter_training_timeout()
    comm.enter_training_timeout()
    assert comm.timeout == ("train.collective_timeout_s", 60)


def test_a_lost_peer_is_named_and_other_errors_pass(tmp_path):
    alone = _alone()
    assert alone.peer_failure(RuntimeError("Connection reset by peer"), 3, tmp_path) is None
    two = Collectives(1, 2, CPU, startup_timeout_s=600, collective_timeout_s=60)
    err = two.peer_failure(RuntimeError("[gloo/transport/tcp] Connection closed by peer"), 7, tmp_path)
    assert isinstance(err, TrainingError)
    assert "rank 1 lost another process at step 7" in str(err) and "train.startup_timeout_s=600s" in str(err)
    assert two.peer_failure(RuntimeError("shape mismatch"), 7, tmp_path) is None


def _on_two_ranks(rank, world):
    comm = Collectives(rank, world, CPU, startup_timeout_s=60, collective_timeout_s=60)
    out = {"sum": comm.all_reduce_sum(torch.tensor([float(rank + 1)])).item(),
           "max": comm.all_reduce_max(torch.tensor(float(rank))).item(),
           "gather": comm.gather(torch.tensor([float(rank)])).tolist()}
    torch.manual_seed(0)
    net = nn.Linear(2, 1, bias=False)
    wrapped = comm.wrap({"D": net})
    votes = comm.votes["D"]
    # Rank 1 votes "non-finite" and was interrupted (Ctrl-C); both ranks' clocks say a timed checkpoint
    # is due, and only rank 0's counts. All ride with D's gradient all-reduce.
    comm.interrupted_at = 0.0 if rank == 1 else None
    comm.start_save_clock(60.0)
    comm.last_save -= 61.0
    votes.start(torch.cat([torch.tensor([float(rank)]), comm.requests()]))
    wrapped["D"](torch.full((1, 2), float(rank + 1))).sum().backward()
    out["grad"] = net.weight.grad.tolist()  # the mean over ranks, as DDP without a hook
    reduced = votes.result("D")
    out["votes"] = reduced.tolist()
    comm.request_votes = reduced[1:]
    out["stop"] = comm.stop_requested()
    out["agreed"] = comm.agreed
    return out


def test_votes_read_before_a_gradient_all_reduce_are_an_error():
    votes = Votes(2)
    votes.start(torch.zeros(4))
    with pytest.raises(TrainingError, match="phase 'D', net D: DDP did not all-reduce the gradients"):
        votes.result("phase 'D', net D")


def test_collectives_and_votes_line_up_on_two_gloo_ranks():
    results = run_gloo(_on_two_ranks, 2)
    for r in results:
        assert r["sum"] == 3.0 and r["max"] == 1.0 and r["gather"] == [0.0, 1.0]
        assert r["grad"] == [[1.5, 1.5]]  # (1 + 2) / 2
        assert r["votes"] == [1.0, 1.0, 1.0, 1.0] and r["stop"] is True
        assert r["agreed"] == Agreed(stop=True, interrupt=True, save=True)  # the same decision on both ranks
