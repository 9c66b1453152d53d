"""What a new user meets around a run (issue 27, item 6): options and overrides in any order, bad
numbers as one-line errors, an online W&B mode without a login, fp16 on a CPU, the start-up lines,
wall-clock time and an ETA outside a terminal, `no such run`, exported files' modes, packs of mixed
image sizes. Real CLI: in this process where it imports no run machinery, else a real process."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from distgan.cli import build_parser, main, parse_args
from tests.e2e.test_cli_help import commands
from tests.helpers import ROOT, TINY_DCGAN, cli_env, run_cli

STEPS = 4


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 4-step run logging every step, outside a terminal (captured output): (run dir, its process,
    the clock before and after it)."""
    run = tmp_path_factory.mktemp("paper_cuts") / "run"
    before = time.time()
    proc = run_cli("train", "configs/dcgan_digits.yaml", *TINY_DCGAN, f"train.steps={STEPS}", "log.every=1",
                   f"run.dir={run}", cpu=True)
    return run, proc, before, time.time()


def _one_line_error(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


# --------------------------------------------------------------------------- the command line


def test_options_and_overrides_in_any_order(tmp_path, capsys):
    outputs = []
    for argv in (["configs/dcgan_digits.yaml", "--dry-run", "train.steps=7", f"run.dir={tmp_path}"],
                 ["configs/dcgan_digits.yaml", "train.steps=7", "--dry-run", f"run.dir={tmp_path}"],
                 ["--dry-run", "configs/dcgan_digits.yaml", "train.steps=3", f"run.dir={tmp_path}", "train.steps=7"]):
        assert main(["train", *argv]) == 0
        outputs.append(capsys.readouterr().out)
    assert "  steps: 7\n" in outputs[0] and outputs[0] == outputs[1] == outputs[2]
    args = parse_args(["bench", "overhead", "--steps", "3", "train.batch_size=4", "--rounds", "2", "model.z_dim=8"])
    assert (args.steps, args.rounds, args.overrides) == (3, 2, ["train.batch_size=4", "model.z_dim=8"])
    # What is neither an option nor an override is still refused, and only it is named.
    for argv, named in ((["train", "c.yaml", "--dry-run", "a=1", "--bogus"], "--bogus"),
                        (["sample", "run", "--out", "x.png", "stray"], "stray")):
        with pytest.raises(SystemExit) as refused:
            parse_args(argv)
        assert refused.value.code == 2
        assert _one_line_error(capsys.readouterr().err).startswith(f"distgan: error: unrecognized arguments: {named} ")


# Numeric options that take any integer, or whose range the command checks itself (one line, exit 2).
UNBOUNDED = {
    ("sample", "--seed"), ("translate", "--seed"),  # any integer seeds the samples
    ("bench", "mixtures", "--seeds"), ("bench", "mixtures", "--sample-seed"),
    # checked as the eval.* keys they set (distgan.sections.eval: eval.num must be >= 2, ...)
    ("eval", "--num"), ("eval", "--seed"), ("eval", "--truncation"), ("eval", "--reference-num"),
}


def test_every_numeric_option_refuses_a_bad_number_in_one_line(capsys):
    bounded = 0
    for path, parser in commands(build_parser()):
        for action in parser._actions:
            if not action.option_strings or action.type in (None, str):
                continue
            option = action.option_strings[0]
            minimum = getattr(action.type, "minimum", None)
            if minimum is None:
                assert (*path, option) in UNBOUNDED, f"distgan {' '.join(path)} {option}: give it a bounded type"
                continue
            for bad in (str(minimum - 1), "x"):
                with pytest.raises(SystemExit) as refused:
                    build_parser().parse_args([*path, option, bad])
                assert refused.value.code == 2
                line = _one_line_error(capsys.readouterr().err)
                assert line.startswith(f"distgan {' '.join(path)}: error: argument {option}"), line
            bounded += 1
    assert bounded >= 20


@pytest.mark.parametrize("num", ["0", "-5"])
def test_sample_num_below_one_is_one_line_not_a_traceback(tiny_run, tmp_path, num):
    run, *_ = tiny_run
    proc = subprocess.run([sys.executable, "-m", "distgan", "sample", str(run), "--num", num, "--out",
                           str(tmp_path / "s.png")], cwd=ROOT, env=cli_env(cpu=True), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert _one_line_error(proc.stderr) == (f"distgan sample: error: argument --num: must be >= 1, got {num} "
                                            f"(see distgan sample --help)")
    assert not (tmp_path / "s.png").exists()


def test_a_path_that_does_not_exist_is_no_such_run(tmp_path, capsys):
    for command in (["sample", str(tmp_path / "nope"), "--out", str(tmp_path / "s.png")],
                    ["export", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "G.safetensors")]):
        assert main(command) == 2
        line = _one_line_error(capsys.readouterr().err)
        assert f"no such run: {tmp_path / 'nope'}" in line and "no complete checkpoint" not in line


# --------------------------------------------------------------------------- starting a run


def test_online_wandb_without_a_login_is_refused_before_the_run_dir_exists(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = cli_env(cpu=True)
    for key in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "WANDB_MODE"):
        env.pop(key, None)
    # No login anywhere wandb looks: a fresh home, its config dir and netrc (neither exists).
    env.update(HOME=str(home), WANDB_CONFIG_DIR=str(home / "wandb_config"), NETRC=str(home / ".netrc"))
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "distgan", "train", "configs/dcgan_digits.yaml", *TINY_DCGAN,
                           "train.steps=1", "log.wandb=online", f"run.dir={run}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2
    line = _one_line_error(proc.stderr)
    assert line.startswith("distgan train: error: log.wandb=online but no W&B login was found")
    assert "`wandb login`" in line and "log.wandb=offline" in line
    assert not run.exists() and "run dir" not in proc.stdout


def test_the_login_check_finds_what_wandb_finds(tmp_path, monkeypatch):
    from distgan.config import load_config
    from distgan.errors import ConfigError
    from distgan.log import check_wandb_login

    for key in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    online = load_config(None, ["log.wandb=online"]).log
    with pytest.raises(ConfigError, match="no api.wandb.ai entry"):
        check_wandb_login(online)
    check_wandb_login(load_config(None, ["log.wandb=offline"]).log)  # offline needs no login
    netrc.write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")  # as `wandb login` writes
    check_wandb_login(online)
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # a W&B server of one's own
    with pytest.raises(ConfigError, match="no wandb.example.org entry"):
        check_wandb_login(online)
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    check_wandb_login(online)


def test_fp16_on_a_cpu_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("DISTGAN_CPU_FP16", raising=False)
    run = tmp_path / "run"
    proc = run_cli("train", "configs/dcgan_digits.yaml", *TINY_DCGAN, "train.steps=1", "train.precision=fp16",
                   f"run.dir={run}", cpu=True, check=False)
    assert proc.returncode == 2
    line = _one_line_error(proc.stderr)
    assert line.startswith("distgan train: error: train.precision=fp16 is for GPUs") and "train.precision=auto" in line
    assert not run.exists(), "refused before it trained: no run dir left behind"


def test_the_run_dir_comes_first_and_tf32_only_on_cuda(tiny_run):
    run, proc, *_ = tiny_run
    lines = proc.stdout.splitlines()
    assert lines[0] == f"run dir: {run}"
    start = next(line for line in lines if "process(es) on" in line)
    assert "process(es) on cpu" in start and "tf32" not in start, start  # a CUDA matmul setting


def test_metrics_lines_have_their_wall_clock_time(tiny_run):
    run, _, before, after = tiny_run
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    times = [r["time"] for r in records]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert before <= times[0] and times == sorted(times) and times[-1] <= after


def test_progress_lines_outside_a_terminal_have_an_eta(tiny_run):
    _, proc, before, after = tiny_run
    eta = {}
    for line in proc.stdout.splitlines():
        if match := re.match(r"step (\d+): .*img/s=\d+(?: eta (\d+):(\d\d):(\d\d))?$", line):
            step, h, m, s = match.groups()
            eta[int(step)] = None if h is None else 3600 * int(h) + 60 * int(m) + int(s)
    # None at step 1 (the pace is counted from there: the first step holds the start-up costs) and at the end.
    assert list(eta) == list(range(1, STEPS + 1)) and eta[1] is None and eta[STEPS] is None, proc.stdout
    assert all(0 <= eta[step] <= after - before for step in range(2, STEPS)), eta


def test_format_duration():
    from distgan.log import format_duration

    assert [format_duration(s) for s in (0, 59.6, 3725.2, 100 * 3600)] == ["0:00:00", "0:01:00", "1:02:05",
                                                                          "100:00:00"]


# --------------------------------------------------------------------------- files


def test_written_files_follow_the_umask(tiny_run, tmp_path, capsys):
    run, *_ = tiny_run
    saved = os.umask(0o027)
    try:
        assert main(["export", str(run), "--out", str(tmp_path / "G.safetensors")]) == 0
        assert main(["sample", str(run), "--num", "4", "--out", str(tmp_path / "s.png")]) == 0
        assert main(["sample", str(run), "--num", "4", "--out", str(tmp_path / "s.npy")]) == 0
        assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
        os.umask(0o022)
        assert main(["export", str(run), "--out", str(tmp_path / "shared.safetensors")]) == 0
    finally:
        os.umask(saved)
    capsys.readouterr()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [*tmp_path.glob("*.*"), *(tmp_path / "report").iterdir()]}
    assert modes.pop("shared.safetensors") == 0o644
    assert modes and all(mode == 0o640 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}


def test_a_pack_of_mixed_sizes_is_summed_up_and_inspected(tmp_path, capsys):
    from distgan.data.manifest import Manifest, size_text

    source = tmp_path / "images"
    source.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(28, 28), (40, 40), (48, 64)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(source / f"{i}.png")
    packed = tmp_path / "packed"
    assert main(["data", "pack", str(source), str(packed), "--quiet"]) == 0
    assert "(images, png, 3 channels, mixed sizes 28–64 px, classes: none)" in capsys.readouterr().out
    assert main(["data", "inspect", str(packed), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "    resolution: mixed sizes 28–64 px\n" in out
    # Every image at its own size on a 64x64 cell (2 px frames), 2 per row.
    assert Image.open(packed / "inspect.png").size == (2 * 68, 2 * 68)
    older = Manifest.load(packed)
    older.sides = []  # a pack made before the sizes were recorded
    assert size_text(older) == "mixed sizes"
