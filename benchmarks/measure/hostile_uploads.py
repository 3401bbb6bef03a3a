"""Files crafted to cost a decoder far more than they weigh, for the station's memory benchmark and tests.

Each is small on the wire and legal up to the point where a careless decoder pays: a deflated DICOM whose
dataset inflates to `inflated` bytes of zeros, and PNGs of just under the pixel budget that compress to
almost nothing.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

DEFLATED_SYNTAX = b"1.2.840.10008.1.2.1.99"
CR_IMAGE_STORAGE = b"1.2.840.10008.5.1.4.1.1.1"


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00"
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH", group, element) + vr + b"\x00\x00" + struct.pack("<I", len(value)) + value
    return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value


def deflated_dicom_bomb(inflated: int = 1 << 30) -> bytes:
    """A DICOM Part 10 file in the Deflated Explicit VR Little Endian syntax whose dataset inflates to
    `inflated` bytes (a 1 GiB default weighs about 1 MB)."""
    meta = (_element(0x0002, 0x0001, b"OB", b"\x00\x01") + _element(0x0002, 0x0002, b"UI", CR_IMAGE_STORAGE)
            + _element(0x0002, 0x0003, b"UI", b"1.2.3.4") + _element(0x0002, 0x0010, b"UI", DEFLATED_SYNTAX))
    header = b"\x00" * 128 + b"DICM" + _element(0x0002, 0x0000, b"UL", struct.pack("<I", len(meta))) + meta
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = b"\x00" * (1 << 20)
    body = [compressor.compress(block) for _ in range(inflated // len(block))]
    body.append(compressor.compress(b"\x00" * (inflated % len(block))))
    body.append(compressor.flush())
    return header + b"".join(body)


def png_bomb(width: int = 5000, height: int = 3999, mode: str = "L") -> bytes:
    """A flat PNG of just under the 20 MP budget: some tens of kB that decode to width x height pixels."""
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 0).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
