"""Decoding one image field: the lean PNG path against PIL's, resize, crop, flip, npy, bad bytes."""

import io

import numpy as np
import pytest
from PIL import Image

from distgan.data.decode import Decode, _png_lean, decode_image
from distgan.data.tario import iter_samples
from tests.data.util import pack_ids


def _png(arr: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **save)
    return buf.getvalue()


@pytest.mark.parametrize("shape", [(5, 7, 3), (6, 3)], ids=["rgb", "grey"])
def test_lean_png_path_equals_pil(shape):
    arr = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    channels = 3 if len(shape) == 3 else 1
    lean = _png_lean(_png(arr), channels)
    assert lean is not None and lean.shape == (shape[0], shape[1], channels)
    np.testing.assert_array_equal(lean.reshape(shape), arr)
    np.testing.assert_array_equal(decode_image(_png(arr), "png", channels, None).reshape(shape), arr)


def test_pngs_the_lean_path_declines_still_decode():
    arr = np.random.default_rng(2).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    palette = Image.fromarray(arr).quantize(8)
    buf = io.BytesIO()
    palette.save(buf, format="PNG")
    assert _png_lean(buf.getvalue(), 3) is None
    got = decode_image(buf.getvalue(), "png", 3, None)
    np.testing.assert_array_equal(got, np.asarray(palette.convert("RGB")))
    assert _png_lean(_png(arr, optimize=False), 1) is None  # RGB file, grey asked for: PIL converts
    assert decode_image(_png(arr), "png", 1, None).shape == (4, 4, 1)


def test_resize_center_crop_and_flip():
    arr = np.zeros((8, 12), np.uint8)
    arr[:, :6] = 255  # left half white
    spec = Decode(("png",), False, 1, 4)
    out = decode_image(_png(arr), "png", 1, spec)  # 8x12 -> 4x6 -> centre 4x4
    assert out.shape == (4, 4, 1) and out[:, 0].min() == 255 and out[:, -1].max() == 0
    flip = Decode(("png",), False, 1, 4, hflip=True)
    assert flip.augments and not spec.augments
    np.testing.assert_array_equal(decode_image(_png(arr), "png", 1, flip, np.array([0.2, 0.5, 0.5])),
                                  out[:, ::-1])
    np.testing.assert_array_equal(decode_image(_png(arr), "png", 1, flip, np.array([0.7, 0.5, 0.5])), out)
    crop = Decode(("png",), False, 1, 4, crop="random")
    left = decode_image(_png(arr), "png", 1, crop, np.array([0.9, 0.0, 0.0]))
    right = decode_image(_png(arr), "png", 1, crop, np.array([0.9, 0.99, 0.0]))
    # The random crop's corner follows the draws: the left end of the 6-wide row or the right.
    assert left[:, 0].min() == 255 and right[:, -1].max() == 0 and int(left.sum()) > int(right.sum())


def test_npy_fields_and_bad_bytes():
    chw = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(1, 3, 6)[:, :, :3].repeat(3, 0)  # (3, 3, 3)
    buf = io.BytesIO()
    np.save(buf, chw)
    np.testing.assert_array_equal(decode_image(buf.getvalue(), "npy", 3, None), chw.transpose(1, 2, 0))
    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match=r"npy image must be \(C, H, W\) uint8"):
        decode_image(buf.getvalue(), "npy", 3, None)
    with pytest.raises(ValueError, match="cannot decode a.png"):
        decode_image(b"\x89PNG\r\n\x1a\nnot really", "a.png", 3, None)
    with pytest.raises(ValueError, match="cannot decode jpg"):
        decode_image(b"not a jpeg", "jpg", 3, None)


def test_fields_of_a_packed_tar_decode_to_the_packed_images(tmp_path):
    out = pack_ids(tmp_path, "ids", 12, shard_size=12)
    with open(out / "ids-000000.tar", "rb") as f:
        samples = list(iter_samples(f))
    assert len(samples) == 12
    for key, fields in samples:
        img = decode_image(fields["png"], "png", 1, Decode(("png",), True, 1, 4))  # (4, 4, 1)
        assert int(img[0, 0, 0]) * 256 + int(img[0, 1, 0]) == int(key) and int(fields["cls"]) == int(key) % 5
