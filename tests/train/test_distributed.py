"""The processes of a run: collectives (no-ops alone, summed/maxed/gathered over real gloo ranks), the
votes that ride with DDP's gradient all-reduce, stop requests, timeouts and a lost peer named as such."""

from __future__ import annotations

import os
import signal

import torch
from torch import nn

from distgan.errors import TrainingError
from distgan.train.distributed import STOP_FILE_ENV, Collectives, wrap_ddp
from tests.distributed.gloo import run_gloo

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
    assert comm.stop_requested() is True


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
    # Rank 1 votes "non-finite" and "stop"; both ride with D's gradient all-reduce.
    votes.local = torch.tensor([float(rank), float(rank)])
    wrapped["D"](torch.full((1, 2), float(rank + 1))).sum().backward()
    out["grad"] = net.weight.grad.tolist()  # the mean over ranks, as DDP without a hook
    out["votes"] = votes.reduced.tolist()
    comm.stop_votes = votes.reduced[1]
    out["stop"] = comm.stop_requested()
    return out


def test_collectives_and_votes_line_up_on_two_gloo_ranks():
    results = run_gloo(_on_two_ranks, 2)
    for r in results:
        assert r["sum"] == 3.0 and r["max"] == 1.0 and r["gather"] == [0.0, 1.0]
        assert r["grad"] == [[1.5, 1.5]]  # (1 + 2) / 2
        assert r["votes"] == [1.0, 1.0] and r["stop"] is True
