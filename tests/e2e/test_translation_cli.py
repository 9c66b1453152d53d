"""One tiny run of each translation config through the CLI, `distgan sample` of a translation run,
and `distgan translate` on good, converted, unreadable and missing inputs."""

import numpy as np
import pytest
from PIL import Image

from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # two tiny trainings and ten CLI starts

TINY = ["data.resolution=8", "model.g.width=8", "model.d.width=8", "model.d.depth=1", "train.steps=2",
        "train.batch_size=4", "log.every=1", "log.sample_count=8", "ckpt.every=0"]
CONFIGS = {"pix2pix": ["configs/pix2pix_digits_edges.yaml", *TINY, "model.g.depth=3"],
           "cyclegan": ["configs/cyclegan_digits_negative.yaml", *TINY, "model.g.depth=1"],
           "dualgan": ["configs/dualgan_digits_negative.yaml", *TINY, "model.g.depth=3"],
           "discogan": ["configs/discogan_digits_negative.yaml", *TINY, "model.g.depth=3"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("translation")
    for name, args in CONFIGS.items():
        run_cli("train", *args, f"run.dir={root / name}")
    return root


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_trains_and_samples_from_its_own_data(runs, tmp_path, name):
    assert (runs / name / "samples").is_dir()
    out = run_cli("sample", str(runs / name), "--num", "4", "--out", str(tmp_path / "x.npy"))
    assert "wrote 4 samples" in out.stdout
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (4, 1, 8, 8) and np.abs(x).max() <= 1
    run_cli("sample", str(runs / name), "--num", "4", "--out", str(tmp_path / "grid.png"))
    assert Image.open(tmp_path / "grid.png").size[0] > 8


def _png(path, size=8, mode="L"):
    rng = np.random.default_rng(0)
    shape = (size, size) if mode == "L" else (size, size, 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def test_translate_writes_one_png_per_readable_input_and_names_the_unreadable(runs, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    _png(src / "a.png")
    _png(src / "b.png", size=12, mode="RGB")  # another size and colour mode: converted
    (src / "broken.png").write_bytes(b"not an image at all")
    proc = run_cli("translate", str(runs / "cyclegan"), str(src), str(out), "--direction", "BA")
    assert "broken.png" in proc.stderr and "warning" in proc.stderr
    assert "1 of 2 inputs were converted" in proc.stdout and "translated 2 images" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    for name in ("a.png", "b.png"):
        with Image.open(out / name) as im:
            assert im.size == (8, 8) and im.mode == "L"


def test_translate_fails_with_one_line_and_writes_nothing(runs, tmp_path):
    empty, out = tmp_path / "empty", tmp_path / "out"
    empty.mkdir()
    proc = run_cli("translate", str(runs / "cyclegan"), str(empty), str(out), check=False)
    assert proc.returncode == 2 and "holds no files" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"")
    (bad / "y.jpg").write_bytes(b"\xff\xd8\xff garbage")
    proc = run_cli("translate", str(runs / "cyclegan"), str(bad), str(out), check=False)
    assert proc.returncode == 2 and "none of the 2 files" in proc.stderr and not out.exists()
    # pix2pix has one generator: only the direction it was trained in (BA: edges -> digits).
    proc = run_cli("translate", str(runs / "pix2pix"), str(bad), str(out), "--direction", "AB", check=False)
    assert proc.returncode == 2 and "translates BA only" in proc.stderr and not out.exists()
