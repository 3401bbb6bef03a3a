"""uvicorn's HTTP/1.1 protocol (h11) with the two limits it lacks: a deadline for a request's headers,
and a cap on open connections.

A client that opens a connection and never finishes its headers holds a file descriptor for as long as it
likes under plain uvicorn (its keep-alive timer runs only between requests, and each byte resets it), so a
thousand of them leave none for the clinic's browser. Here every request must be whole within
HEADER_TIMEOUT_S of its connection opening or of the previous response, and a connection past
MAX_CONNECTIONS is closed as it opens, so the descriptors held stay under the process's limit and the
accept loop never starts failing (and logging a traceback per attempt).
"""

from __future__ import annotations

import resource

from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 2000
# Descriptors the process needs beside its connections: the model, the log, spooled uploads, libraries.
SPARE_DESCRIPTORS = 200


def raise_descriptor_limit(wanted: int = MAX_CONNECTIONS + SPARE_DESCRIPTORS) -> int:
    """Lift the soft RLIMIT_NOFILE towards `wanted` (no further than the hard limit); returns the
    connection cap that then fits (the service file sets the hard limit: LimitNOFILE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    limit = wanted if soft == resource.RLIM_INFINITY else soft
    return max(16, min(MAX_CONNECTIONS, limit - SPARE_DESCRIPTORS))


class GuardedH11Protocol(H11Protocol):
    max_connections = MAX_CONNECTIONS
    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._requests = 0
        self._deadline = None
        if len(self.connections) > self.max_connections:
            transport.close()  # connection_lost takes it out of the set
            return
        self._arm()

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        seen = self._requests
        self._deadline = self.loop.call_later(self.header_timeout_s, self._expire, seen)

    def _expire(self, seen: int) -> None:
        # Still no new request since the deadline was set, and none being answered: let it go.
        if self._requests == seen and (self.cycle is None or self.cycle.response_complete):
            if not self.transport.is_closing():
                self.transport.close()

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:  # a request's headers arrived whole
            self._requests += 1

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
        super().connection_lost(exc)
