"""Decode untrusted image bytes into RGB uint8 arrays.

The header is read first (Pillow opens lazily) and the pixel count checked
against a limit before any full-size buffer is allocated, so a decompression
bomb costs a few kilobytes, not gigabytes.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facegraph.models.errors import ImageError, ImageTooLargeError

DEFAULT_MAX_PIXELS = 40_000_000
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")

# Our own limit is enforced before decoding; Pillow's warning/exception would only
# duplicate it with a different message.
Image.MAX_IMAGE_PIXELS = None


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header alone. Raises ImageError if unreadable."""
    with _open(data) as img:
        return img.size


def _open(data: bytes) -> Image.Image:
    if not data:
        raise ImageError("the request carries no image bytes", code="empty_image")
    try:
        img = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except UnidentifiedImageError:
        raise ImageError("the bytes are not a supported image (JPEG, PNG, WebP, BMP, TIFF, GIF)") from None
    except Exception as exc:  # Pillow raises assorted errors on corrupt headers
        raise ImageError(f"the image header is unreadable ({type(exc).__name__})") from None
    return img


def _to_uint8_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        peak = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        grey = (arr.astype(np.float32) * (255.0 / peak)).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        span = float(arr.max(initial=0) - arr.min(initial=0)) or 1.0
        grey = ((arr - arr.min(initial=0)) * (255.0 / span)).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Composite on white: transparent pixels are background, not black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode != "RGB":
        img = img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, I;16 variants handled above
    return np.asarray(img)


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Bytes -> (H, W, 3) RGB uint8, EXIF orientation applied; first frame of animations.

    Raises:
        ImageError: empty, undecodable, truncated or zero-sized input.
        ImageTooLargeError: the header announces more than ``max_pixels`` pixels.
    """
    img = _open(data)
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageError(f"the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img)
            array = _to_uint8_rgb(img)
    except ImageError:
        raise
    except Exception as exc:  # truncated data, bad EXIF, decoder errors
        raise ImageError(f"the image could not be decoded ({type(exc).__name__}); is it truncated?") from None
    finally:
        img.close()
    return np.ascontiguousarray(array)


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """RGB uint8 -> JPEG bytes (used by clients, tests and benchmarks)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
