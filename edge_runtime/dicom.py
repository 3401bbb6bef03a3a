"""Read a DICOM film into the 8-bit grayscale picture a radiologist would see, or say why not.

Called by the one image decoder (images.py) when a file carries the 'DICM' marker, whatever its
name. pydicom (the `[dicom]` extra) is imported only then, so the base install never needs it.

The display pipeline is the standard's: stored values -> modality LUT (rescale) -> VOI LUT or
window -> MONOCHROME1 inverted. Without a window, 8-bit films are shown as stored and 12/16-bit
films are stretched to their own min..max (as images.py does for 16-bit PNGs: detectors rarely use
the full range, so scaling by the bit depth would leave them nearly black).

Anything the model cannot be trusted with but can still read (a CT slice, a non-chest body part)
is decoded with a warning in the image's `info["warnings"]`; anything it cannot read
(multi-frame, colour spaces other than RGB, a compressed syntax without a decoder) is an ImageError
with the reason.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from .decode_budget import check_deflated_dicom, check_pixels
from .errors import ImageError

MAGIC_OFFSET = 128
MAGIC = b"DICM"
# Radiographs: computed (CR) and digital (DX) radiography. Others are decoded with a warning.
RADIOGRAPHY = {"CR", "DX"}
WARNINGS_KEY = "warnings"
INSTALL_HINT = "install the extra: pip install 'edgecxr[dicom]'"


def is_dicom(head: bytes) -> bool:
    """A DICOM Part 10 file: 128-byte preamble, then 'DICM' (the extension is not to be trusted)."""
    return len(head) >= MAGIC_OFFSET + len(MAGIC) and head[MAGIC_OFFSET:MAGIC_OFFSET + len(MAGIC)] == MAGIC


def decode_dicom(data: bytes, max_pixels: int) -> Image.Image:
    """DICOM bytes -> an 'L' (or 'RGB') PIL image with `info['warnings']`: a list of strings."""
    pydicom = _import_pydicom()
    # pydicom warns (Python warnings) about every oddity of a file it still reads; what matters to
    # the user is decided here and said once, in the result's warnings or the skip reason.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _decode(pydicom, data, max_pixels)


def _decode(pydicom, data: bytes, max_pixels: int) -> Image.Image:
    from pydicom.errors import InvalidDicomError

    check_deflated_dicom(data)  # before pydicom inflates it whole
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageError(f"corrupt DICOM file: {_first_line(exc)}") from None
    if "PixelData" not in ds:
        raise ImageError("DICOM file holds no image (no Pixel Data: a report or structured document?)")
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < 1 or columns < 1:
        raise ImageError("DICOM image has no pixels (Rows or Columns missing or 0)")
    # Before the pixels are decoded (a JPEG 2000 or RLE stream expands to this): the budget of every format.
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    allocated = int(ds.get("BitsAllocated", 8) or 8)
    check_pixels(columns, rows, samples * max(1, allocated // 8), max_pixels)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageError(f"multi-frame DICOM ({frames} frames): one film per file is expected; "
                         f"export the frame to read as its own file")
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422"):
        raise ImageError(f"DICOM photometric interpretation {photometric or 'missing'} is not supported "
                         f"(MONOCHROME1, MONOCHROME2 or RGB)")
    pixels = _pixel_array(ds)
    if photometric.startswith("MONOCHROME"):
        image = Image.fromarray(_display_values(pixels, ds, photometric), mode="L")
    else:  # pydicom returns YBR films converted to RGB; colour screenshots of films do occur
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ImageError(f"DICOM colour image of shape {pixels.shape} is not a single RGB picture")
        image = Image.fromarray(_to_uint8_full_range(pixels, int(ds.get("BitsStored", 8))), mode="RGB")
    image.info[WARNINGS_KEY] = _warnings(ds)
    return image


def _import_pydicom():
    try:
        import pydicom
    except ImportError:
        raise ImageError(f"DICOM file: reading it needs pydicom, which the base install leaves out; "
                         f"{INSTALL_HINT}") from None
    return pydicom


def _pixel_array(ds) -> np.ndarray:
    meta = getattr(ds, "file_meta", None)
    syntax = None if meta is None else meta.get("TransferSyntaxUID")
    try:
        return ds.pixel_array
    except (NotImplementedError, RuntimeError, ImportError) as exc:
        # pydicom names the plugins that would decode it; keep its first line, add ours.
        name = getattr(syntax, "name", None) or str(syntax)
        raise ImageError(f"DICOM transfer syntax {name} cannot be decoded here ({_first_line(exc)}); "
                         f"{INSTALL_HINT} for the JPEG decoders") from None
    except (ValueError, AttributeError, KeyError, TypeError, EOFError) as exc:
        raise ImageError(f"corrupt DICOM pixel data: {_first_line(exc)}") from None


def _display_values(stored: np.ndarray, ds, photometric: str) -> np.ndarray:
    """Stored MONOCHROME values -> uint8 display values (0 black), per the standard's pipeline."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if stored.ndim != 2:
        raise ImageError(f"DICOM grayscale image of shape {stored.shape} is not a single 2-D film")
    try:
        values = apply_modality_lut(stored, ds)
        low, high = _voi_range(ds)
        if low is not None:
            values = apply_voi_lut(values, ds, prefer_lut=True)
    except (ValueError, NotImplementedError, AttributeError, IndexError, TypeError) as exc:
        raise ImageError(f"DICOM VOI LUT or window cannot be applied: {_first_line(exc)}") from None
    # One float64 copy, worked on in place: each temporary of a 20 MP film costs 160 MB (decode_budget.py).
    values = np.array(values, dtype=np.float64)
    if low is None:
        if int(ds.get("BitsStored", 8)) <= 8 and "RescaleSlope" not in ds and "ModalityLUTSequence" not in ds:
            low, high = 0.0, 255.0
        else:
            low, high = float(values.min()), float(values.max())
    if not np.isfinite(values).all():
        raise ImageError("DICOM pixel values are not finite after rescaling")
    if high <= low:
        values[:] = 0.0
    else:
        values -= low
        values /= high - low
        np.clip(values, 0.0, 1.0, out=values)
    if photometric == "MONOCHROME1":  # minimum value is white: invert so bone is bright, as trained
        np.subtract(1.0, values, out=values)
    values *= 255.0
    values += 0.5
    return values.astype(np.uint8)


def _voi_range(ds) -> tuple[float | None, float | None]:
    """The output range of the film's VOI LUT or window (None, None without one).

    Found by pushing the LUT's whole domain, or two extreme values, through pydicom's own
    transform, so the range follows the standard's rules (output bit depth, rescale) exactly.
    """
    from pydicom.pixels import apply_voi_lut

    sequence = ds.get("VOILUTSequence")
    if sequence and sequence[0].get("LUTDescriptor") is not None and sequence[0].get("LUTData") is not None:
        entries, first, depth = (int(v) for v in sequence[0].LUTDescriptor)
        entries = entries or 65536
        if depth == 8:
            # pydicom 3.0 indexes an 8-bit table with an 8-bit array, so stored values above 255 wrap
            # (a 12-bit film came out nearly black). The same entries read as 16-bit are exact; the
            # dataset is this decoder's own copy.
            sequence[0].LUTDescriptor = [sequence[0].LUTDescriptor[0], first, 16]
        table = apply_voi_lut(np.arange(first, first + entries, dtype=np.int64), ds, prefer_lut=True)
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        table = apply_voi_lut(np.array([-1e12, 1e12]), ds, prefer_lut=False)
    else:
        return None, None
    return float(np.min(table)), float(np.max(table))


def _to_uint8_full_range(pixels: np.ndarray, bits: int) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    return (np.clip(pixels.astype(np.float64) / (2 ** bits - 1), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _warnings(ds) -> list[str]:
    """Readable but questionable films: said alongside the prediction, never a failure."""
    found = []
    modality = str(ds.get("Modality", "") or "").upper()
    if modality not in RADIOGRAPHY:
        found.append(f"DICOM modality {modality or 'missing'} is not a radiograph (CR or DX): "
                     f"the model was trained on chest radiographs")
    body_part = str(ds.get("BodyPartExamined", "") or "").upper()
    if body_part and body_part != "CHEST":
        found.append(f"DICOM body part {body_part} is not CHEST")
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
