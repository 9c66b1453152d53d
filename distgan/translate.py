"""`distgan translate RUN INPUT_DIR OUT_DIR`: a trained image-to-image generator (pix2pix, the cycle
family) applied to every image file of a folder, one PNG out per file in, same name.

Inputs of another size or colour mode are converted to the model's (resized with bicubic
resampling, to grey or RGB), and a note says so once. A file that does not read as an image is
named in a warning and left out; when none reads, the command fails and writes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from distgan.errors import DistganError


class TranslateError(DistganError):
    """Nothing to translate: no image file, or none readable."""


def _read(path: Path, channels: int, side: int):
    """(C, side, side) float in [-1, 1] and whether it was converted, or raise OSError/ValueError."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        mode = "L" if channels == 1 else "RGB"
        converted = im.mode != mode or im.size != (side, side)
        im = im.convert(mode)
        if im.size != (side, side):
            im = im.resize((side, side), Image.Resampling.BICUBIC)
        arr = np.asarray(im, dtype=np.float32).reshape(side, side, channels)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0, converted


def read_folder(folder: Path, channels: int, side: int) -> tuple[list[Path], torch.Tensor]:
    """The readable images of `folder` (sorted names, hidden files left out) as (N, C, side, side)."""
    if not folder.is_dir():
        raise TranslateError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise TranslateError(f"{folder} holds no files to translate")
    kept, images, converted = [], [], 0
    for path in files:
        try:
            image, was_converted = _read(path, channels, side)
        except (OSError, ValueError, SyntaxError) as exc:  # PIL: UnidentifiedImageError, truncated, bad header
            print(f"distgan translate: warning: skipped {path}: not a readable image "
                  f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})", file=sys.stderr, flush=True)
            continue
        kept.append(path)
        images.append(image)
        converted += was_converted
    if not kept:
        raise TranslateError(f"none of the {len(files)} files in {folder} is a readable image (see the warnings)")
    if converted:
        print(f"note: {converted} of {len(kept)} inputs were converted to the model's {channels} channel(s), "
              f"{side}x{side} px", flush=True)
    names = [p.stem for p in kept]
    if len(set(names)) != len(names):
        raise TranslateError(f"{folder}: several inputs share a name apart from the suffix, and the outputs "
                             f"are <name>.png")
    return kept, torch.stack(images)


def translate(source: Path, input_dir: Path, out_dir: Path, *, direction: str = "", use_ema: bool = True,
              seed: int = 0) -> list[Path]:
    """Translate every readable image of `input_dir` into `out_dir`/<name>.png; returns the outputs."""
    from distgan.games import Conditions
    from distgan.log import save_png
    from distgan.runs import open_run
    from distgan.sampling import generate

    run = open_run(source, use_ema=use_ema)
    game, nets = run.game, run.nets
    game.check_inputs(True, "translate")  # an image-to-image run; the game's CapabilityError otherwise
    if direction:
        game.set_direction(direction, "--direction")
    channels, side = game.info.shape[0], game.info.shape[-1]
    files, images = read_folder(input_dir, channels, side)
    samples = generate(game, nets, len(images), seed=seed, device=torch.device("cpu"),
                       conditions=Conditions(images=images))
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    pixels = samples.x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)  # (N, C, H, W)
    for path, image in zip(files, pixels):
        out = out_dir / f"{path.stem}.png"
        hwc = image.permute(1, 2, 0).numpy()
        save_png(hwc if channels == 3 else hwc[:, :, 0], out)
        outputs.append(out)
    return outputs
