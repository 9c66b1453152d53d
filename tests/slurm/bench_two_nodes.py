"""Throughput of 2 nodes x 1 process against 1 node x 2 processes, on the two-node cluster of
tests/slurm/two_nodes.py (gloo over the namespaces' veth link and bridge against gloo over one
namespace's loopback), both started with `accelerate launch` as launch/multi_node.yaml and
launch/cpu.yaml say, no Slurm jobs. Needs root; tears the cluster down afterwards.

    python -m tests.slurm.bench_two_nodes [--steps 100] [--rounds 3] [key=value ...]

Prints img/s (real images per second, all ranks: the median of metrics.jsonl's perf/img_per_s
after the first log line) for each layout and round (the layouts alternate, so a change of the
machine's load falls on both), then the medians. docs/benchmarks.md has the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.helpers import ROOT, cli_env
from tests.slurm.two_nodes import TwoNodeCluster, cannot_make


def _launch(config: str, machines: int, rank: int, main_ip: str, run: Path, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config,
            "--num_machines", str(machines), "--machine_rank", str(rank), "--num_processes", "2",
            "--main_process_ip", main_ip, "--main_process_port", "29500",
            "-m", "distgan", "train", *args, f"run.dir={run}"]


def img_per_s(run: Path) -> float:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return statistics.median(m["perf/img_per_s"] for m in lines[1:])


def measure(cluster: TwoNodeCluster, layout: str, args: list[str], out: Path) -> float:
    run = out / layout.replace(" ", "_")
    out.mkdir(parents=True, exist_ok=True)
    env = dict(cli_env(cpu=True), ACCELERATE_USE_CPU="1")
    if layout == "1 node x 2 processes":
        starts = [("n1", _launch("launch/cpu.yaml", 1, 0, "127.0.0.1", run, args))]
    else:
        starts = [(n, _launch("launch/multi_node.yaml", 2, r, cluster.addr["n1"], run, args))
                  for r, n in enumerate(cluster.nodes)]
    procs = []
    for node, cmd in starts:
        with open(f"{run}-{node}.log", "w") as log:
            procs.append(cluster.on(node, cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    codes = [p.wait(timeout=3600) for p in procs]
    if any(codes):
        raise SystemExit(f"{layout}: exit codes {codes}; logs in {out}")
    return img_per_s(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="distgan train overrides (key=value)")
    a = parser.parse_args()
    reason = cannot_make()
    if reason:
        raise SystemExit(reason)
    args = ["configs/dcgan_digits.yaml", f"train.steps={a.steps}", "log.every=20", "log.progress=false",
            "log.sample_every=0", "ckpt.every=0", *a.overrides]
    out = Path(tempfile.mkdtemp(prefix="distgan-bench-two-nodes-"))
    cluster = TwoNodeCluster(out / "cluster")
    (out / "cluster").mkdir()
    try:
        cluster.up()
        print(f"{' '.join(args)}; load average {os.getloadavg()[0]:.1f}")
        rates: dict[str, list[float]] = {"1 node x 2 processes": [], "2 nodes x 1 process": []}
        for r in range(a.rounds):
            for layout, got in rates.items():
                got.append(measure(cluster, layout, args, out / f"round{r}"))
                print(f"round {r + 1}, {layout}: {got[-1]:.0f} img/s", flush=True)
        for layout, got in rates.items():
            print(f"{layout}: median {statistics.median(got):.0f} img/s (min {min(got):.0f}, max {max(got):.0f})")
        two, one = (statistics.median(rates[k]) for k in ("2 nodes x 1 process", "1 node x 2 processes"))
        print(f"2 nodes / 1 node: {two / one:.2f}; load average {os.getloadavg()[0]:.1f}; runs in {out}")
    finally:
        cluster.down()


if __name__ == "__main__":
    main()
