"""Safe decoding against a corpus of bad and unusual images, made from real sample photos."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prodcat.catalogue.images import (
    ImageError,
    load_image,
    pad_to_square,
    read_image,
    to_square_array,
)

SAMPLE_IMAGES = Path(__file__).resolve().parents[1] / "src/prodcat/data/sample/images"
PHOTO = SAMPLE_IMAGES / "3221.jpg"  # a real 60x80 product photo (a sports shoe)


def _photo() -> Image.Image:
    return Image.open(PHOTO).convert("RGB")


def _encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb's calling card."""
    data = bytearray(_encode(Image.new("L", (8, 8)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"id,title\n1,Red Shirt\n", "not an image"),
        (PHOTO.read_bytes()[: len(PHOTO.read_bytes()) * 2 // 5], "truncated"),
        (PHOTO.read_bytes()[:200] + bytes(range(256)) * 4, "truncated"),
        (_png_claiming(30_000, 30_000), "decompression bomb"),
    ],
    ids=["zero-bytes", "text-file", "truncated", "corrupt", "bomb"],
)
def test_bad_images_raise_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageError, match=reason):
        read_image(data)


def test_pixel_limit_is_a_parameter() -> None:
    data = _encode(_photo(), "PNG")
    with pytest.raises(ImageError, match="60x80 = 4,800 pixels; the limit is 1,000"):
        read_image(data, max_pixels=1000)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)


def _close(a: Image.Image, b: Image.Image, tol: float) -> bool:
    diff = np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))
    return bool(diff.mean() < tol)


def test_cmyk_palette_grey_become_rgb_with_the_same_look() -> None:
    photo = _photo()
    cmyk = read_image(_encode(photo.convert("CMYK"), "JPEG", quality=95))
    palette = read_image(_encode(photo.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"))
    grey = read_image(_encode(photo.convert("L"), "PNG"))
    for img in (cmyk, palette, grey):
        assert img.mode == "RGB"
        assert img.size == photo.size
    assert _close(cmyk, photo, 6.0)
    assert _close(palette, photo, 6.0)
    assert _close(grey, photo.convert("L").convert("RGB"), 0.5)


def test_alpha_is_composited_on_white() -> None:
    rgba = _photo().convert("RGBA")
    alpha = np.full(rgba.size[::-1], 255, dtype=np.uint8)
    alpha[:, :20] = 0  # left stripe fully transparent, its colour black
    pixels = np.asarray(rgba).copy()
    pixels[:, :20, :3] = 0
    pixels[..., 3] = alpha
    img = read_image(_encode(Image.fromarray(pixels, "RGBA"), "PNG"))
    arr = np.asarray(img)
    assert img.mode == "RGB"
    assert (arr[:, :20] == 255).all()  # white, not the black hidden under the transparency
    assert np.array_equal(arr[:, 20:], np.asarray(_photo())[:, 20:])


def test_transparent_palette_is_composited_on_white() -> None:
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([0, 0, 0] + [200, 10, 10] * 255)
    pal.info["transparency"] = 0
    arr = np.asarray(read_image(_encode(pal, "PNG", transparency=0)))
    assert (arr == 255).all()


def test_16_bit_greyscale_keeps_its_range() -> None:
    ramp = (np.linspace(0, 65535, 64 * 32).reshape(32, 64)).astype(np.uint16)
    img = read_image(_encode(Image.fromarray(ramp), "PNG"))
    arr = np.asarray(img)
    assert img.mode == "RGB"
    assert arr[0, 0, 0] == 0
    assert arr[-1, -1, 0] == 255  # scaled by 65535, not clipped to white everywhere
    assert 100 < arr[16, 32, 0] < 155


def test_exif_orientation_is_applied() -> None:
    photo = _photo()  # 60 wide, 80 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img = read_image(_encode(photo, "JPEG", exif=exif, quality=95))
    assert img.size == (80, 60)
    assert _close(img, photo.transpose(Image.Transpose.ROTATE_270), 6.0)


def test_pad_to_square_keeps_the_whole_product_on_white() -> None:
    photo = _photo()
    square = pad_to_square(photo)
    assert square.size == (80, 80)
    arr = np.asarray(square)
    assert (arr[:, :10] == 255).all()
    assert (arr[:, 70:] == 255).all()
    assert np.array_equal(arr[:, 10:70], np.asarray(photo))


def test_same_product_at_any_resolution_gives_nearly_the_same_array() -> None:
    photo = _photo()
    big = photo.resize((1500, 2000), Image.Resampling.LANCZOS)
    small = to_square_array(photo, 224).astype(float)
    large = to_square_array(big, 224).astype(float)
    other = to_square_array(Image.open(SAMPLE_IMAGES / "3738.jpg").convert("RGB"), 224)
    same_gap = np.abs(small - large).mean()
    other_gap = np.abs(small - other.astype(float)).mean()
    assert same_gap < 3.0  # out of 255: interpolation noise only
    assert other_gap > 5 * same_gap


def test_large_jpeg_draft_decoding_matches_full_decoding() -> None:
    big = _photo().resize((1500, 2000), Image.Resampling.LANCZOS)
    data = _encode(big, "JPEG", quality=92)
    drafted = read_image(data, draft_size=224)
    full = read_image(data)
    assert max(drafted.size) < max(full.size)  # decoded at a fraction of the size
    a = to_square_array(drafted, 224).astype(float)
    b = to_square_array(full, 224).astype(float)
    assert np.abs(a - b).mean() < 3.0
