"""distgan/report.py on a run directory written by hand (metrics.jsonl and samples/, the files a run
leaves): metrics read in step order with a torn last line ignored, one figure per group and one
panel per sub-group, the latest grid enlarged, and what is not a run refused."""

import json

import numpy as np
import pytest
from PIL import Image

from distgan.errors import DistganError
from distgan.report import _groups, read_metrics, series, write_report


def _run(tmp_path, records, torn=""):
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + torn)
    return run


RECORDS = [{"step": 2, "time": 1765000000.5, "loss/D/real": 0.5, "loss/G/adv": 1.5, "perf/img_s": 100.0,
            "note": "text", "nan_guard": True},
           {"step": 1, "loss/D/real": 0.7, "loss/G/adv": 1.2},
           {"step": 2, "eval/fid": 30.0}]


def test_metrics_are_read_in_step_order_numbers_only_and_a_torn_line_is_ignored(tmp_path):
    run = _run(tmp_path, RECORDS, torn='{"step": 3, "loss/D/re')
    records = read_metrics(run / "metrics.jsonl")
    assert len(records) == 3
    data = series(records)
    assert data["loss/D/real"] == ([1, 2], [0.7, 0.5])
    assert data["eval/fid"] == ([2], [30.0])
    assert "note" not in data and "nan_guard" not in data  # text and booleans are not curves
    assert "time" not in data  # the wall clock of a record, not a metric
    with pytest.raises(DistganError, match="metrics.jsonl not found: is this a distgan run directory"):
        read_metrics(tmp_path / "nope" / "metrics.jsonl")


def test_figures_are_the_first_part_of_a_name_and_panels_the_second():
    groups = _groups(["loss/D/real", "loss/D/fake", "loss/G/adv", "perf/img_s", "eval/fid", "lr"])
    assert {k: dict(v) for k, v in groups.items()} == {
        "loss": {"loss/D": ["loss/D/fake", "loss/D/real"], "loss/G": ["loss/G/adv"]},
        "perf": {"perf/img_s": ["perf/img_s"]},
        "eval": {"eval/fid": ["eval/fid"]},
        "other": {"lr": ["lr"]},
    }


def test_report_shows_every_figure_the_latest_grid_enlarged_and_the_latest_values(tmp_path):
    run = _run(tmp_path, RECORDS)
    for step, value in ((1, 0), (10, 255)):
        Image.fromarray(np.full((24, 24, 3), value, np.uint8)).save(run / "samples" / f"step_{step:07d}.png")
    index = write_report(run, tmp_path / "report")
    page = index.read_text()
    for figure in ("loss", "perf", "eval"):
        assert f'src="{figure}.png"' in page and Image.open(tmp_path / "report" / f"{figure}.png").size[0] > 300
    assert "Samples at step 10" in page and "<td>eval/fid</td><td>30</td>" in page and "last at step 2" in page
    shown = Image.open(tmp_path / "report" / "samples.png")
    assert shown.size == (384, 384) and np.asarray(shown).min() == 255  # step 10's grid, 16x
    assert not list((tmp_path / "report").glob(".*"))  # no temporary file left


def test_a_run_without_metrics_or_samples_yet(tmp_path):
    run = _run(tmp_path, [])
    with pytest.raises(DistganError, match="holds no metrics yet"):
        write_report(run)
    run = _run(tmp_path / "other", [{"step": 1, "loss/D/real": 1.0}])
    page = write_report(run).read_text()
    assert "no sample grid yet" in page and (run / "report" / "loss.png").is_file()
