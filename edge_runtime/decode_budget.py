"""The one budget every decode of an outside file works within, whatever its format.

Checked before decompressing (the header's size, a file's byte count) and while decompressing (a
deflated DICOM dataset is inflated in bounded steps and refused at the limit), so what a file costs
is bounded by these numbers, never by what it claims or what it was crafted to expand to. How many
decodes may run at once is the caller's: `decode_slots()` sizes it from the machine's memory.
"""

from __future__ import annotations

import os
import stat
import struct
import threading
import zlib

from .errors import ImageError

# The largest digital radiography detectors are about 4300 x 4300 pixels (18.5 MP); anything
# far larger is not an X-ray and may be a decompression bomb, so it is refused before decoding.
MAX_PIXELS = 20_000_000
# What one decoded picture may hold: 20 MP at 4 bytes a pixel (RGBA, or 16-bit films widened to
# 32-bit by Pillow). A 16-bit RGB DICOM of 20 MP (120 MB) is refused.
MAX_DECODED_BYTES = MAX_PIXELS * 4
# A file on disk read whole: an uncompressed 16-bit 20 MP DICOM is 40 MB; anything past this is not
# one film (and /dev/zero never ends).
MAX_FILE_BYTES = 128 * 1024 * 1024
# A deflated DICOM dataset (transfer syntax 1.2.840.10008.1.2.1.99) inflates to its pixels plus
# its header: refused past the decoded budget plus 16 MB of elements.
MAX_INFLATED_BYTES = MAX_DECODED_BYTES + 16 * 1024 * 1024
# The memory one decode and its analysis (preview, gate, preprocessing, heat map) was measured to
# take at the budget's edge (benchmarks/measure/station_hostile.py: 325-352 MB above the idle station for a
# 20 MP RGBA PNG and a 20 MP film with its heat map); the slots
# are sized so that all of them together use at most a quarter of the memory available.
PEAK_PER_DECODE = 320 * 1024 * 1024

DEFLATED_SYNTAX = b"1.2.840.10008.1.2.1.99"
_INFLATE_STEP = 1 << 20


def check_pixels(width: int, height: int, bytes_per_pixel: float, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse, from the header alone, a picture with no pixels or beyond the pixel or byte budget."""
    if width < 1 or height < 1:
        raise ImageError("image has no pixels")
    if width * height > max_pixels:
        raise ImageError(f"image too large: {width}x{height} = {width * height / 1e6:.1f} MP "
                         f"(limit {max_pixels / 1e6:.0f} MP)")
    if width * height * bytes_per_pixel > MAX_DECODED_BYTES:
        raise ImageError(f"image too large: {width}x{height} at {bytes_per_pixel:g} bytes a pixel decodes to "
                         f"{width * height * bytes_per_pixel / 1e6:.0f} MB (limit {MAX_DECODED_BYTES / 1e6:.0f} MB)")


def read_bounded(path: os.PathLike | str) -> bytes:
    """A regular file's bytes, at most MAX_FILE_BYTES. A FIFO, a device or a socket is refused without
    reading from it (opened non-blocking, so a FIFO with no writer cannot hang the caller)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ImageError(f"cannot read {os.fsdecode(path)}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"cannot read {os.fsdecode(path)}: not a regular file (a folder, FIFO, device or "
                             f"socket)")
        if info.st_size > MAX_FILE_BYTES:
            raise ImageError(f"file too large: {info.st_size / 1e6:.0f} MB (limit {MAX_FILE_BYTES / 1e6:.0f} MB)")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, MAX_FILE_BYTES + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_FILE_BYTES:  # it grew while being read
                raise ImageError(f"file too large: over {MAX_FILE_BYTES / 1e6:.0f} MB")
        return b"".join(chunks)
    except OSError as exc:
        raise ImageError(f"cannot read {os.fsdecode(path)}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def dicom_dataset_offset(data: bytes) -> tuple[bytes | None, int]:
    """(transfer syntax UID, offset of the dataset after the file meta group) of DICOM Part 10 bytes,
    read from the explicit-VR little-endian (0002,xxxx) elements alone; (None, 132) if it has none."""
    offset, syntax = 132, None
    while offset + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, offset)
        if group != 0x0002:
            break
        vr = data[offset + 4:offset + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            if offset + 12 > len(data):
                break
            (length,) = struct.unpack_from("<I", data, offset + 8)
            start = offset + 12
        else:
            (length,) = struct.unpack_from("<H", data, offset + 6)
            start = offset + 8
        if element == 0x0010:
            syntax = data[start:start + length].rstrip(b"\x00 ")
        offset = start + length
    return syntax, offset


def check_deflated_dicom(data: bytes, limit: int = MAX_INFLATED_BYTES) -> None:
    """For a deflated DICOM, inflate its dataset step by step, keeping nothing, and refuse it as soon as
    it passes `limit`: pydicom inflates the whole dataset in one call before anything can look at it."""
    syntax, offset = dicom_dataset_offset(data)
    if syntax != DEFLATED_SYNTAX:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total, pending = 0, data[offset:]
    try:
        while pending:
            total += len(inflater.decompress(pending, _INFLATE_STEP))
            if total > limit:
                raise ImageError(f"DICOM deflated dataset inflates past {limit / 1e6:.0f} MB: refused "
                                 f"(decompression bomb guard)")
            pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise ImageError(f"corrupt DICOM file: its deflated dataset does not inflate ({exc})") from None


def decode_slots(available: int | None = None) -> int:
    """How many decodes may run at once: one per core, fewer where a quarter of the available memory
    does not hold that many at PEAK_PER_DECODE (a Pi with 1 GB gets one); at least one."""
    if available is None:
        available = available_memory()
    by_memory = (available // 4) // PEAK_PER_DECODE
    return max(1, min(os.cpu_count() or 1, by_memory))


def available_memory() -> int:
    """MemAvailable from /proc/meminfo (Linux, the Pi included); 1 GB where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1 << 30


class DecodeSlots:
    """A bounded number of decode-and-analyse sections at once (threads wait their turn)."""

    def __init__(self, slots: int | None = None):
        self.slots = slots or decode_slots()
        self._semaphore = threading.BoundedSemaphore(self.slots)

    def __enter__(self):
        self._semaphore.acquire()
        return self

    def __exit__(self, *exc):
        self._semaphore.release()
        return False
