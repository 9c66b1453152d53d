"""`distgan train CONFIG --dry-run` checks a config where no GPU stack is installed: with torch
unimportable, every shipped config is checked (the file checks included) and printed resolved,
as the same config loads with torch; a bad config is one line naming the key, exit 2."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from distgan.config import load_config
from tests.helpers import ROOT

CONFIGS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").glob("*.yaml"))


def _without_torch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m distgan ARGS` where `import torch` raises ImportError (a stand-in package first on the path)."""
    stand_in = tmp_path / "no_torch" / "torch"
    stand_in.mkdir(parents=True, exist_ok=True)
    (stand_in / "__init__.py").write_text("raise ImportError('no torch on this login node (test stand-in)')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(stand_in.parent), str(ROOT)]))
    return subprocess.run([sys.executable, "-m", "distgan", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_every_config_dry_runs_without_torch(tmp_path):
    # One process checks them all (a process per config would spend the test in interpreter starts).
    code = ("import sys, yaml\nfrom distgan.cli import main\n"
            "for path in sys.argv[1:]:\n"
            "    assert main(['train', path, '--dry-run']) == 0, path\n"
            "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n")
    stand_in = tmp_path / "no_torch" / "torch"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text("raise ImportError('no torch on this login node (test stand-in)')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(stand_in.parent), str(ROOT)]))
    proc = subprocess.run([sys.executable, "-c", code, *CONFIGS], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    printed = [yaml.safe_load(doc) for doc in proc.stdout.split("run:\n")[1:] for doc in ["run:\n" + doc]]
    assert len(printed) == len(CONFIGS) >= 30
    for path, resolved in zip(CONFIGS, printed):
        assert resolved == load_config(path).to_dict(), path


def test_torch_stand_in_really_stops_torch(tmp_path):
    proc = _without_torch(tmp_path, "train", "configs/dcgan_digits.yaml")
    assert proc.returncode != 0 and "no torch on this login node" in proc.stderr


def test_dry_run_names_a_bad_key_and_warns_of_files_it_cannot_reach_without_torch(tmp_path):
    proc = _without_torch(tmp_path, "train", "configs/dcgan_digits.yaml", "train.stpes=3", "--dry-run")
    assert proc.returncode == 2 and "unknown config key train.stpes" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    # Shards this machine does not have (a login node without the data mount): named, not fatal.
    proc = _without_torch(tmp_path, "train", "configs/dcgan_digits.yaml", "data.name=shards",
                          f"data.shards={tmp_path}/gone-{{000..001}}.tar", "--dry-run")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert "warning: not checked here: data.shards=" in proc.stderr and "2 of 2 paths missing" in proc.stderr


def test_dry_run_runs_the_file_checks_where_the_files_are(tmp_path):
    """Paired shards for CoGAN, which learns from unpaired data: the manifest is read and refused."""
    from distgan.data.builtin import load_digits
    from PIL import Image
    import numpy as np

    x, _ = load_digits(8)
    pixels = np.round((x[:8, 0].numpy() + 1) * 127.5).astype(np.uint8)
    for side, images in (("A", pixels), ("B", 255 - pixels)):
        (tmp_path / "src" / side).mkdir(parents=True)
        for i, image in enumerate(images):
            Image.fromarray(image, "L").save(tmp_path / "src" / side / f"d{i}.png")
    subprocess.run([sys.executable, "-m", "distgan", "data", "pack", str(tmp_path / "src"), str(tmp_path / "paired"),
                    "--layout", "paired", "--quiet"], cwd=ROOT, check=True, capture_output=True)
    proc = _without_torch(tmp_path, "train", "configs/cogan_digits_negative.yaml", "data.name=shards",
                          "data.pairing=paired", "data.split=all", f"data.shards={tmp_path / 'paired'}", "--dry-run")
    assert proc.returncode == 2 and "are paired" in proc.stderr and "Traceback" not in proc.stderr
