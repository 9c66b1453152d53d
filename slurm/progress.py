"""Print the step of the newest complete checkpoint under CHECKPOINTS_DIR (0 if none).

Used by slurm/common.sh to decide on a requeue after the launcher exits. Standard
library only, on purpose: importing torch there costs seconds to minutes on a
loaded shared file system, inside the few seconds of grace a stopping job has, and
fails outright where the job's environment is broken. It mirrors
distgan.train.checkpoint.find_latest/is_complete (a `step_NNNNNNN` dir whose meta.json
lists files that all exist; `latest` trusted only when it points at one);
tests/slurm/test_slurm_jobs.py checks the two agree.
"""

import json
import re
import sys
from pathlib import Path

STEP_DIR = re.compile(r"^step_(\d+)$")


def complete(path: Path) -> bool:
    if not STEP_DIR.match(path.name) or not (path / "meta.json").is_file():
        return False
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return all((path / name).is_file() for name in meta.get("files", []))


def newest_step(root: Path) -> int:
    pointer = root / "latest"
    if pointer.is_file():
        name = pointer.read_text().strip()
        if name and complete(root / name):
            return int(STEP_DIR.match(name).group(1))
    steps = [int(STEP_DIR.match(p.name).group(1)) for p in root.iterdir() if p.is_dir() and complete(p)] \
        if root.is_dir() else []
    return max(steps, default=0)


if __name__ == "__main__":
    print(newest_step(Path(sys.argv[1])))
