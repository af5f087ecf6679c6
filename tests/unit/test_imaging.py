import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from facegraph.models.errors import ImageError, ImageTooLargeError
from facegraph.models.imaging import decode_image, image_size


def save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


RGB = np.zeros((40, 60, 3), np.uint8)
RGB[:, :30] = (200, 30, 10)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "TIFF"])
def test_lossless_formats_round_trip(fmt):
    kw = {"lossless": True} if fmt == "WEBP" else {}
    out = decode_image(save(Image.fromarray(RGB), fmt, **kw))
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    assert np.array_equal(out, RGB)


def test_jpeg_grey_rgba_16bit_cmyk():
    assert np.abs(decode_image(save(Image.fromarray(RGB), "JPEG", quality=95)).astype(int) - RGB).mean() < 3
    grey = decode_image(save(Image.fromarray(np.full((10, 12), 77, np.uint8)), "PNG"))
    assert grey.shape == (10, 12, 3) and (grey == 77).all()
    rgba = np.zeros((5, 5, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, :2, 3] = 255  # left opaque red, rest transparent -> white
    out = decode_image(save(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 4].tolist() == [255, 255, 255]
    deep = Image.fromarray(np.full((6, 7), 65535 // 2, np.uint16))
    out = decode_image(save(deep, "PNG"))
    assert out.shape == (6, 7, 3) and abs(int(out[0, 0, 0]) - 127) <= 1
    cmyk = Image.fromarray(RGB).convert("CMYK")
    out = decode_image(save(cmyk, "JPEG", quality=95))
    assert out.shape == (40, 60, 3) and abs(int(out[0, 0, 0]) - 200) < 12


def test_exif_orientation_is_applied():
    img = Image.fromarray(RGB)  # 60 wide, 40 tall, red on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    out = decode_image(save(img, "JPEG", quality=95, exif=exif))
    assert out.shape == (60, 40, 3)
    assert out[0, 20, 0] > 150 and out[-1, 20, 0] < 60  # red now on top


def test_animated_gif_gives_first_frame():
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (10, 250)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buf.getvalue())
    assert out.shape == (8, 8, 3) and out.max() < 50


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with one tiny compressed row."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_from_the_header():
    bomb = png_header_only(100_000, 100_000)
    assert len(bomb) < 200
    assert image_size(bomb) == (100_000, 100_000)
    with pytest.raises(ImageTooLargeError, match="10000000000 pixels"):
        decode_image(bomb, max_pixels=40_000_000)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello world", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, save(Image.fromarray(RGB), "JPEG")[:300], save(Image.fromarray(RGB), "PNG")[:-30]],
    ids=["empty", "text", "png-signature-only", "truncated-jpeg", "truncated-png"],
)
def test_bad_bytes_raise_image_error(data):
    with pytest.raises(ImageError):
        decode_image(data)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_escape_as_other_errors(data):
    try:
        out = decode_image(data, max_pixels=1_000_000)
    except ImageError:
        return
    assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8
