"""Real W&B in offline mode: what the trainer logs is in the run file, a resumed run
reuses the run id stored in the checkpoint, and an attempt that re-does steps an
earlier one logged rewinds the W&B run to where it starts."""

import json
import os
import signal
import subprocess
import sys
import time

from distgan.train import checkpoint
from tests.helpers import ROOT, TINY_DCGAN, cli_env, latest_state, metrics, read_wandb_records, run_cli, wandb_history


def _run_record(path):
    return next(r.run for r in read_wandb_records(path) if r.WhichOneof("record_type") == "run")


def _logged_steps(run) -> list[int]:
    """Steps with losses in metrics.jsonl, read while the run may be stopped mid-line."""
    path = run / "metrics.jsonl"
    steps = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "loss/D/real" in record:
            steps.append(record["step"])
    return steps


def test_offline_run_logs_losses_and_images_and_resume_reuses_the_id(tmp_path):
    run = tmp_path / "run"
    common = ["configs/dcgan_digits.yaml", *TINY_DCGAN, "log.every=2", "log.sample_every=2", "ckpt.every=2",
              "log.wandb=offline", "log.wandb_group=sweep-a", f"run.dir={run}"]
    run_cli("train", *common, "train.steps=4")
    run_id = latest_state(run)["wandb_id"]
    first = sorted((run / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(first) == 1, f"expected one offline run with id {run_id}: {list((run / 'wandb').iterdir())}"

    records = read_wandb_records(first[0])
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert runs and runs[0].run_id == run_id and runs[0].run_group == "sweep-a"
    rows = wandb_history(first[0])
    steps = [row["_step"] for row in rows if "loss/D/real" in row]
    assert steps == [2, 4]
    assert all("perf/img_per_s" in row for row in rows if "loss/D/real" in row)
    images = [row for row in rows if row.get("samples/_type") == "image-file"]  # nested keys come flattened
    assert [row["_step"] for row in images] == [2, 4]
    assert len(list(first[0].parent.glob("files/media/images/samples_*.png"))) == 2

    run_cli("train", *common, "train.steps=6")
    assert latest_state(run)["wandb_id"] == run_id
    resumed = sorted((run / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(resumed) == 2, "the resumed job logs to the same run id"
    later = [row["_step"] for f in resumed for row in wandb_history(f) if "loss/D/real" in row]
    assert 6 in later
    # Stopped at its checkpoint (step 4, its last logged step): the next attempt appends, no rewind.
    second = _run_record(resumed[1])
    assert second.resume and not second.branch_point.run
    assert [row["_step"] for row in wandb_history(resumed[1]) if "loss/D/real" in row] == [6]


def test_no_api_key_in_logs(tmp_path):
    run = tmp_path / "run"
    import os
    os.environ["WANDB_API_KEY"] = "0123456789abcdef0123456789abcdef01234567"
    try:
        proc = run_cli("train", "configs/dcgan_digits.yaml", *TINY_DCGAN, "train.steps=1", "log.wandb=offline",
                       f"run.dir={run}")
    finally:
        del os.environ["WANDB_API_KEY"]
    for text in [proc.stdout, proc.stderr] + [p.read_text(errors="replace") for p in run.rglob("*")
                                              if p.is_file() and p.suffix in (".log", ".yaml", ".jsonl", ".txt")]:
        assert "0123456789abcdef0123456789abcdef01234567" not in text


def test_a_rerun_before_the_first_checkpoint_logs_to_the_same_run(tmp_path):
    """The id is fixed at the first start (<run dir>/wandb_id), not only in checkpoints: a job that
    died before its first checkpoint is rerun into the same W&B run."""
    import shutil

    run = tmp_path / "run"
    common = ["configs/dcgan_digits.yaml", *TINY_DCGAN, "train.steps=2", "log.every=1", "log.wandb=offline",
              f"run.dir={run}"]
    run_cli("train", *common)
    run_id = (run / "wandb_id").read_text().strip()
    assert latest_state(run)["wandb_id"] == run_id
    shutil.rmtree(run / "checkpoints")  # as if it had died before writing one
    again = run_cli("train", *common)
    assert "resumed" not in again.stdout
    assert (run / "wandb_id").read_text().strip() == run_id
    files = sorted((run / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 2
    # The rerun re-does steps 1-2, which the first attempt logged: W&B is rewound to step 0 and
    # metrics.jsonl holds each step once.
    assert f"W&B: rewinding run {run_id} to step 0" in again.stdout
    point = _run_record(files[1]).branch_point
    assert (point.run, point.metric, point.value) == (run_id, "_step", 0)
    assert [r["step"] for r in metrics(run) if "loss/D/real" in r] == [1, 2]


def test_a_crash_after_a_checkpoint_rewinds_wandb_to_it(tmp_path):
    """SIGKILL after the run logged steps past its newest checkpoint (step S): the next attempt
    resumes at S, rewinds the W&B run to S (resume_from="<id>?_step=S", recorded in the offline
    run for `wandb sync`) and logs S+1 on; metrics.jsonl and samples/ keep each step once."""
    run = tmp_path / "run"
    common = ["configs/dcgan_digits.yaml", *TINY_DCGAN, "log.every=1", "log.sample_every=3", "ckpt.every=4",
              "log.progress=false", "log.wandb=offline", f"run.dir={run}"]
    out = tmp_path / "killed.log"
    with open(out, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "distgan", "train", *common, "train.steps=100000"],
                                cwd=ROOT, env=cli_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        # Freeze the run to read its state; kill it once it has logged past a checkpoint.
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            os.kill(proc.pid, signal.SIGSTOP)
            latest = checkpoint.find_latest(run / "checkpoints")
            logged = _logged_steps(run)
            if latest is not None and logged and logged[-1] > int(latest.name.removeprefix("step_")):
                break
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    start, last = int(latest.name.removeprefix("step_")), logged[-1]
    run_id = (run / "wandb_id").read_text().strip()
    assert latest_state(run)["wandb_id"] == run_id
    before = set((run / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(before) == 1, "the killed attempt has its offline run"

    end = last + 2
    resumed = run_cli("train", *common, f"train.steps={end}")
    assert f"resumed from {latest} at step {start}" in resumed.stdout
    assert f"W&B: rewinding run {run_id} to step {start}: an earlier attempt logged up to step {last}" \
        in resumed.stdout
    (new,) = set((run / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")) - before
    record = _run_record(new)
    assert record.run_id == run_id and not record.resume
    point = record.branch_point
    assert (point.run, point.metric, point.value) == (run_id, "_step", start)
    rows = wandb_history(new)
    assert [row["_step"] for row in rows if "loss/D/real" in row] == list(range(start + 1, end + 1))
    images = [row["_step"] for row in rows if row.get("samples/_type") == "image-file"]
    assert images == [s for s in range(start + 1, end + 1) if s % 3 == 0 or s == end]
    assert [r["step"] for r in metrics(run) if "loss/D/real" in r] == list(range(1, end + 1))
    grids = sorted(int(p.stem.removeprefix("step_")) for p in (run / "samples").glob("step_*.png")
                   if p.stem.removeprefix("step_").isdigit())  # not a .tmp.png the kill left
    assert grids == [s for s in range(1, end + 1) if s % 3 == 0 or s == end]
