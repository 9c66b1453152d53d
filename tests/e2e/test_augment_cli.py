"""Augmentation end to end, tiny: the two augmented digits configs and the conditional and
information games with `augment:` train through the CLI with finite losses; ADA's p is logged
(game/augment/p) and checkpointed; a bad augment key is one line naming it."""

import math

import pytest

from tests.helpers import TINY_DCGAN, latest_state, metrics, run_cli

RUNS = {
    "diffaugment": ["configs/dcgan_digits_diffaugment.yaml"],
    "ada": ["configs/dcgan_digits_ada.yaml", "augment.p=0.5"],
    "cgan_ada": ["configs/cgan_digits.yaml", "augment.name=ada", "augment.p=0.5"],
    "infogan_diffaugment": ["configs/infogan_digits.yaml", "augment.name=diffaugment"],
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_augmented_config_trains(tmp_path, name):
    run = tmp_path / name
    run_cli("train", *RUNS[name], *TINY_DCGAN, "train.steps=4", "log.every=2", "log.sample_every=0", "ckpt.every=0",
            f"run.dir={run}")
    lines = metrics(run)
    assert [m["step"] for m in lines] == [2, 4]
    assert all(math.isfinite(v) for m in lines for v in m.values() if isinstance(v, float))
    p = latest_state(run)["game"]["augment"]["p"].item()
    assert lines[-1]["game/augment/p"] == pytest.approx(p)
    assert p == 1.0 if "diffaugment" in name else 0.0 <= p <= 1.0


def test_bad_augment_key_is_one_line(tmp_path):
    proc = run_cli("train", "configs/dcgan_digits.yaml", "augment.name=ada", "augment.policy=[color, blur]",
                   f"run.dir={tmp_path / 'bad'}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "augment.policy: unknown op 'blur' (choose from color, translation, cutout, xflip, rotate90, xint, scale, "
        "rotation, brightness, contrast, saturation)")
