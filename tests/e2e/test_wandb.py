"""Real W&B in offline mode: what the trainer logs is in the run file, and a
resumed run reuses the run id stored in the checkpoint."""


from tests.helpers import TINY_DCGAN, latest_state, read_wandb_records, run_cli, wandb_history


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
    assert len(sorted((run / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))) == 2
