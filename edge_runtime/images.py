"""Decode any image a clinic might hand us into one 8-bit grayscale picture, or say why not.

X-rays arrive as DICOM films (dicom.py), 8-bit JPEGs, 16-bit PNGs exported from DICOM viewers, RGB(A) screenshots,
CMYK scans or phone photos with an EXIF rotation. Everything downstream sees plain 'L' images.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .decode_budget import MAX_PIXELS, check_pixels, read_bounded
from .dicom import WARNINGS_KEY, is_dicom
from .errors import ImageError

# Bytes a decoded pixel takes in each Pillow mode (a mode not listed: 4, the widest).
MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2,
              "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3, "RGBA": 4, "RGBX": 4, "CMYK": 4, "I": 4, "F": 4}

ImageSource = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]


def open_image(source: ImageSource, max_pixels: int = MAX_PIXELS,
               reduce_to: int | None = None) -> Image.Image:
    """Return the decoded, upright image from a path, bytes, PIL image or numpy array.

    `reduce_to`: the caller needs no more than this many pixels on each side, so a JPEG may be
    decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) as long as both sides stay at least
    this large. Other formats and images already near that size are decoded in full.
    """
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        image = _image_from_array(source)
    elif isinstance(source, (bytes, bytearray)):
        image = _decode(io.BytesIO(source), "<bytes>", max_pixels, reduce_to)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        image = _decode(io.BytesIO(read_bounded(path)), str(path), max_pixels, reduce_to)
    else:
        raise ImageError(f"unsupported image source of type {type(source).__name__}")
    _check_size(image, max_pixels)
    return image


def image_warnings(image: Image.Image) -> tuple[str, ...]:
    """What the decoder noticed but did not refuse (e.g. a DICOM film's modality is not CR/DX)."""
    return tuple(image.info.get(WARNINGS_KEY, ()))


def _decode(stream: io.BytesIO, name: str, max_pixels: int, reduce_to: int | None = None) -> Image.Image:
    if stream.getbuffer().nbytes == 0:
        raise ImageError("empty file")
    if is_dicom(stream.getbuffer()[:132].tobytes()):
        from .dicom import decode_dicom

        return decode_dicom(stream.getvalue(), max_pixels)
    try:
        image = Image.open(stream)
        _check_size(image, max_pixels)  # header only: refuse bombs before the pixels are decoded
        if reduce_to is not None and image.format == "JPEG":
            # Same mode: asking for "L" would drop a colour photo's chroma before the input gate.
            # draft() keeps both sides >= reduce_to, and a no-op when no scale would.
            image.draft(image.mode, (reduce_to, reduce_to))
        image.load()
        # EXIF orientation is applied here so a phone photo of a film is upright before resizing.
        return ImageOps.exif_transpose(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image (unrecognised format)") from None
    except Image.DecompressionBombError:
        raise ImageError("image too large (decompression bomb guard)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"corrupt or truncated image: {message}") from None


def _check_size(image: Image.Image, max_pixels: int) -> None:
    width, height = image.size
    check_pixels(width, height, MODE_BYTES.get(image.mode, 4), max_pixels)


def _image_from_array(array: np.ndarray) -> Image.Image:
    """Raw pixels: uint8, uint16 (e.g. from DICOM) or floats in [0, 1]; HxW, HxWx1, HxWx3 or HxWx4."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(f"array of shape {array.shape} is not an image (expected HxW or HxWx1/3/4)")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageError("array contains NaN or infinite values")
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif array.dtype == np.uint16 and array.ndim == 2:
        return Image.fromarray(array.astype(np.int32), mode="I")
    elif array.dtype != np.uint8:
        raise ImageError(f"array dtype {array.dtype} is not supported (uint8, uint16 or float)")
    return Image.fromarray(np.ascontiguousarray(array))


def to_grayscale(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit 'L'. High-bit-depth images are stretched to their own min..max range."""
    mode = image.mode
    if mode == "L":
        return image
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 12- and 16-bit X-rays rarely use the full range; dividing by 256 would leave them black.
        # One float64 copy worked on in place (same arithmetic, one 160 MB temporary for 20 MP, not three).
        values = np.array(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        if high <= low:
            return Image.fromarray(np.zeros(values.shape, dtype=np.uint8), mode="L")
        values -= low
        values *= 255.0 / (high - low)
        values += 0.5
        return Image.fromarray(values.astype(np.uint8), mode="L")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Transparent areas become black, the colour of empty space on a radiograph.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    if mode == "CMYK":
        return image.convert("RGB").convert("L")
    return image.convert("L")
