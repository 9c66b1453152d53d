"""The layout of a VGG-style feature network read from a user's .safetensors file, without torch.

Pix2PixHD's perceptual loss (`game.vgg_weight`, `game.vgg_file`) compares VGG features of the fake and
the real image. No weights can be downloaded here: the user supplies the file, e.g. torchvision's
VGG19 features saved once where downloads work:

    python -c "import torchvision, safetensors.torch as st; \\
               st.save_file(torchvision.models.vgg19(weights='IMAGENET1K_V1').features.state_dict(), 'vgg19.safetensors')"

What fits: keys `<index>.weight` (out, in, 3, 3) and `<index>.bias` (out,) of torchvision's `features`
Sequential (a `features.` prefix is allowed): each convolution followed by a ReLU, so consecutive
convolutions of a block are 2 indices apart and a max pool sits in a gap of 3. Each block's first ReLU
is a tap (relu1_1, relu2_1, ... as pix2pixHD's VGGLoss; at most 5 blocks); later layers are not used.
The header is read as JSON (8-byte length, then the JSON), so `distgan train --dry-run` checks the file
where torch is not installed; `distgan.models.perceptual` builds the net from the same layout.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from distgan.errors import ConfigError

MAX_BLOCKS = 5
# pix2pixHD's weights of relu1_1 .. relu5_1; a file with fewer blocks takes the last ones.
TAP_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
_FLOATS = ("F32", "F16", "BF16", "F64")


def read_header(path: Path, key: str) -> dict[str, dict]:
    """name -> {"dtype", "shape"} of a .safetensors file; ConfigError naming `key` when it is none."""
    if not path.is_file():
        raise ConfigError(f"{key}={str(path)!r}: no such file (the perceptual loss's VGG weights are a local "
                          f".safetensors file you supply; nothing is downloaded: see docs/games.md)")
    try:
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(f.read(size))
        if not isinstance(header, dict):
            raise ValueError("header is not a mapping")
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key}={str(path)!r} is not a .safetensors file ({exc})") from None
    header.pop("__metadata__", None)
    return header


def vgg_layout(path: str, key: str = "game.vgg_file") -> list[list[tuple[str, int, int]]]:
    """The file's convolutions up to the last block's first, as blocks of (key prefix, in, out)."""
    header = read_header(Path(path), key)
    if header and all(name.startswith("features.") for name in header):
        header = {name[len("features."):]: v for name, v in header.items()}
    unfit = f"{key}={path!r} does not fit a VGG-style feature net"
    layers: dict[int, dict[str, list[int]]] = {}
    for name, entry in header.items():
        m = re.fullmatch(r"(\d+)\.(weight|bias)", name)
        if m is None:
            raise ConfigError(f"{unfit}: {name!r} is not <index>.weight / <index>.bias of torchvision's VGG "
                              f"`features` (batch-norm VGGs are not supported)")
        if entry.get("dtype") not in _FLOATS:
            raise ConfigError(f"{unfit}: {name!r} holds {entry.get('dtype')}, not floats")
        layers.setdefault(int(m.group(1)), {})[m.group(2)] = list(entry.get("shape", []))
    if not layers:
        raise ConfigError(f"{unfit}: it holds no tensors")
    blocks: list[list[tuple[str, int, int]]] = []
    previous, channels = None, None
    for index in sorted(layers):
        shapes = layers[index]
        weight, bias = shapes.get("weight"), shapes.get("bias")
        if weight is None or len(weight) != 4 or weight[2:] != [3, 3] or bias != weight[:1]:
            raise ConfigError(f"{unfit}: layer {index} is not a 3x3 convolution with its bias "
                              f"(weight {weight}, bias {bias})")
        out, inp = weight[0], weight[1]
        if channels is not None and inp != channels:
            raise ConfigError(f"{unfit}: layer {index} takes {inp} channels, but the layer before gives {channels}")
        gap = None if previous is None else index - previous
        if gap not in (None, 2, 3):
            raise ConfigError(f"{unfit}: layers {previous} and {index} are {gap} apart (2: conv, ReLU, conv; "
                              f"3: conv, ReLU, max pool, conv)")
        if gap in (None, 3):
            blocks.append([])
        blocks[-1].append((str(index), inp, out))
        previous, channels = index, out
    if len(blocks) > MAX_BLOCKS:
        raise ConfigError(f"{unfit}: {len(blocks)} blocks, at most {MAX_BLOCKS} (VGG's relu1_1 .. relu5_1)")
    return blocks[:-1] + [blocks[-1][:1]]  # nothing after the last tap is used


def check_channels(blocks: list[list[tuple[str, int, int]]], channels: int, path: str,
                   key: str = "game.vgg_file") -> None:
    """ConfigError unless the net takes images of `channels` (a grey image is repeated onto 3 channels)."""
    takes = blocks[0][0][1]
    if takes != channels and not (takes == 3 and channels == 1):
        raise ConfigError(f"{key}={path!r} does not fit the data: its first convolution takes {takes} channels, "
                          f"the images have {channels}")
