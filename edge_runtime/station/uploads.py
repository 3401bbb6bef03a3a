"""An upload read within its limits as it streams, whatever its framing (Content-Length, chunked, or both).

The per-request cap counts the bytes that actually arrive, so a body that says it is small and then is
not is cut off at the cap. A file past the per-file cap stops being stored at the cap (the rest of its
bytes are dropped as they arrive) and is answered as too large, while the other files of the upload are
still read: neither memory nor disk ever holds more than the caps.
"""

from __future__ import annotations

from typing import AsyncIterator

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser


class RequestTooLarge(Exception):
    """More bytes arrived than the request may carry."""


async def capped(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > limit:
            raise RequestTooLarge(received)
        yield chunk


class FileCappedParser(MultiPartParser):
    """Starlette's multipart parser, storing at most `max_file_bytes` of each file."""

    def __init__(self, *args, max_file_bytes: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_file_bytes = max_file_bytes
        self.received: dict[int, int] = {}  # id(UploadFile) -> bytes that arrived for it

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        upload = self._current_part.file
        if upload is None:
            return super().on_part_data(data, start, end)
        seen = self.received.get(id(upload), 0)
        self.received[id(upload)] = seen + (end - start)
        room = self.max_file_bytes - seen
        if room > 0:
            super().on_part_data(data, start, min(end, start + room))

    def arrived(self, upload: UploadFile) -> int:
        return self.received.get(id(upload), 0)


async def read_form(request, max_files: int, max_file_bytes: int, max_request_bytes: int):
    """(form, parser) of a multipart upload; raises RequestTooLarge or MultiPartException."""
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        raise MultiPartException("expected a multipart/form-data upload")
    parser = FileCappedParser(request.headers, capped(request.stream(), max_request_bytes), max_files=max_files,
                              max_fields=4, max_part_size=64 * 1024, max_file_bytes=max_file_bytes)
    return await parser.parse(), parser
