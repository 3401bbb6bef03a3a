"""Start the station: load the model once, open the log, say where to point the browser, serve."""

from __future__ import annotations

import socket
from pathlib import Path

from ..console import console
from ..errors import EdgecxrError
from ..predictor import Predictor
from . import auth
from .app import Limits, Station, create_app


# Idle time allowed between requests on one connection, and how long a graceful stop waits.
KEEP_ALIVE_S = 5
# The largest request head (request line and headers) h11 buffers before it refuses the request.
MAX_HEAD_BYTES = 16 * 1024


def run(model: Path, host: str, port: int, data_dir: Path, keep_images: bool, token_file: Path | None,
        max_file_bytes: int, max_files: int, threads: int | None, heatmaps: bool | str | None = True,
        behind_proxy: bool = False) -> None:
    import uvicorn

    from .protocol import GuardedH11Protocol, raise_descriptor_limit

    loopback = auth.is_loopback(host)
    token = None if loopback and token_file is None and not behind_proxy else auth.load_token(token_file)
    predictor = Predictor.open(model, threads=threads)
    try:
        station = Station(predictor, Path(model), Path(data_dir), token, keep_images, Limits(max_file_bytes, max_files),
                          heatmaps)
    except OSError as exc:
        raise EdgecxrError(f"cannot open the log in {data_dir}: {exc.strerror or exc}") from None
    except Exception as exc:  # sqlite3.Error: a damaged or foreign database file
        raise EdgecxrError(f"cannot open the log in {data_dir}: {exc}") from None
    sock = bind(host, port)
    port = sock.getsockname()[1]  # --port 0: the free port the system picked
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}/"
    console.print(f"edgecxr station: {Path(model).name} ({predictor.runtime}), log {station.log.path}", highlight=False,
                  soft_wrap=True)
    if station.token is None:
        console.print(f"open {url}", highlight=False)
    else:
        how = f"from {token_file}" if token_file is not None else "generated for this run"
        console.print(f"open {url}?token={station.token}", highlight=False, soft_wrap=True)
        where = ("off loopback" if not loopback else "behind a proxy" if behind_proxy
                 else "as --token-file was given")
        console.print(f"access token required ({where}); token {how}", highlight=False)
    GuardedH11Protocol.max_connections = raise_descriptor_limit()
    config = uvicorn.Config(create_app(station), host=host, port=port, log_level="warning", access_log=False,
                            server_header=False, timeout_graceful_shutdown=5, http=GuardedH11Protocol,
                            timeout_keep_alive=KEEP_ALIVE_S, h11_max_incomplete_event_size=MAX_HEAD_BYTES)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        station.log.close()
        sock.close()


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a taken port or a foreign address is one clear line."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(128)
    except OSError as exc:
        raise EdgecxrError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
