"""The station's routes: one page, its assets, and a small JSON API behind it (Starlette).

Each upload is read within its caps as it streams (uploads.py) and decoded once, inside one of a
bounded number of decode slots (decode_budget.py), so memory is bounded whatever is sent; the predictor
(one interpreter, not thread-safe) runs behind a lock; the result is committed to the log before the
answer leaves. File names are kept as text only: kept images are stored under their sha256, never under
the name they came with. Who may send what is guards.py's.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import io
import re
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from ..atomic import atomic_path
from ..decode_budget import DecodeSlots
from ..errors import ImageError
from ..heatmap import AUTO, choose_method, overlay
from ..images import to_grayscale
from ..gate import NOT_CXR, NOT_CXR_TEXT
from ..predictor import Predictor
from ..site_monitor import compare_with_reference
from . import auth, guards
from ..model_card import commissioning_text, model_card
from .log import Entry, StationLog
from .uploads import MultiPartException, RequestTooLarge, capped, read_form

UNREADABLE = "unreadable"
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
# No external script, style, font or image can load: the page works, and leaks nothing, offline.
SECURITY_HEADERS = {
    "content-security-policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: "
                                "blob:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                                "base-uri 'none'"),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",  # the first URL carries the token
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
PREVIEW_SIDE = 640
MAX_NAME = 200
MAX_REFERENCE = 100
# Multipart framing and the reference field, on top of the files themselves.
FORM_OVERHEAD = 64 * 1024
# A refused upload up to this size is read and dropped before the answer; a larger one is cut off.
DRAIN_LIMIT = 256 * 1024 * 1024
PAGE_ROWS = 100  # the results list, newest first, a page at a time
DISK_FULL = ("the station's disk is full: this result could not be logged, so it is not shown; free space in "
             "the data folder, then upload again")


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 40 * 1024 * 1024
    max_files: int = 20


class Station:
    """The loaded model, the log and the settings one server holds for its lifetime."""

    def __init__(self, predictor: Predictor, model_path: Path, data_dir: Path, token: str | None,
                 keep_images: bool = False, limits: Limits = Limits(), heatmaps: bool | str = True,
                 slots: DecodeSlots | None = None):
        self.predictor = predictor
        # True: the model's best method (cam where it exports its feature map); a method name; False: none.
        self.heatmap_method = (choose_method(AUTO if heatmaps is True else heatmaps, predictor)
                               if heatmaps else None)
        self.csrf = guards.new_csrf_token()
        self.slots = slots or DecodeSlots()
        # The films are analysed on as many threads as there are slots, not on the web stack's pool of 40:
        # each thread that decodes a 20 MP film keeps a malloc arena of that size, so the threads, not the
        # slots, would set the memory held (measured: 1.5 GB for 16 parallel bombs on the shared pool).
        self.analysers = ThreadPoolExecutor(max_workers=self.slots.slots, thread_name_prefix="analyse")
        # Bodies received at once: each may spool up to the request cap to disk while it arrives.
        self.receiving = asyncio.Semaphore(2 * self.slots.slots)
        self.model_path = Path(model_path)
        self.data_dir = Path(data_dir)
        self.token = token
        self.keep_images = keep_images
        self.limits = limits
        self.log = StationLog(self.data_dir)
        self.card = model_card(self.model_path, predictor.metadata, predictor.runtime, predictor.learned_check)
        self.commissioning = commissioning_text(predictor.metadata)

    def monitor(self, probabilities, projections) -> tuple[str, str]:
        result = compare_with_reference(self.predictor.reference, projections, probabilities)
        return result.verdict, result.message

    def analyse_upload(self, upload: UploadFile, file_name: str, reference: str) -> dict:
        """Read one stored upload and analyse it inside a decode slot: at most `slots` films in memory."""
        with self.slots:
            upload.file.seek(0)
            data = upload.file.read(self.limits.max_file_bytes + 1)
            return self.analyse(data, file_name, reference)

    def analyse(self, data: bytes, file_name: str, reference: str) -> dict:
        """Decode, gate, predict (and map the evidence of) one upload; log it; return what the page shows."""
        started = time.perf_counter()
        sha = hashlib.sha256(data).hexdigest()
        film, heat, prediction, error, warnings = None, None, None, None, ()
        try:
            analysis = self.predictor.analyse(data, heatmap=self.heatmap_method)
            prediction, warnings = analysis.prediction, analysis.prediction.warnings
            film = preview_png(analysis.image)
            if analysis.heat is not None:
                heat = png_data_url(overlay(analysis.image, analysis.heat))
            elif analysis.heat_problem is not None:  # the answer stands without its picture
                warnings = (*warnings, f"no heat map: {analysis.heat_problem}")
        except ImageError as exc:
            error = str(exc)
        except MemoryError:
            error = "not enough memory to decode it"
        latency_ms = (time.perf_counter() - started) * 1000.0
        kept = self._keep(data, sha) if self.keep_images else ""
        if prediction is None:
            result, probability, gate, distance, projection = UNREADABLE, None, f"unreadable: {error}", None, None
        else:
            result, probability = prediction.label, prediction.probability
            gate = prediction.reason if prediction.refused else "accepted"
            distance, projection = prediction.gate_distance, prediction.projection
        entry = Entry(reference=reference, file_name=file_name, image_sha256=sha, result=result,
                      probability=probability, threshold=self.predictor.threshold, gate=gate, gate_distance=distance,
                      model_sha256=self.predictor.metadata.sha256, commissioning=self.commissioning,
                      latency_ms=round(latency_ms, 3), kept_image=kept, projection=projection,
                      warnings="; ".join(warnings))
        row = self.log.record(entry, self.monitor)
        row.update(film=film, heatmap=heat, error=error, label_text=label_text(result))
        return row

    def _keep(self, data: bytes, sha: str) -> str:
        name = f"{sha}.{stored_suffix(data)}"
        target = self.data_dir / "images" / name
        if not target.exists():
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)
        return name


def stored_suffix(data: bytes) -> str:
    """A kept image's extension, from its content (never from the name it was uploaded with)."""
    if data[128:132] == b"DICM":
        return "dcm"
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            return re.sub(r"[^a-z0-9]", "", (image.format or "").lower()) or "bin"
    except Exception:  # noqa: BLE001 - anything Pillow cannot identify is kept as plain bytes
        return "bin"


def preview_png(image) -> str:
    """The film as the page shows it (DICOM included): grey, or colour for a photo."""
    return png_data_url(image if image.mode in ("L", "RGB") else to_grayscale(image))


def png_data_url(image) -> str:
    """At most PREVIEW_SIDE a side: a phone on the clinic's Wi-Fi gets tens of kB, not a 4000-pixel film."""
    shown = image.copy()
    shown.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    buffer = io.BytesIO()
    shown.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def label_text(result: str) -> str:
    if result == NOT_CXR:
        return NOT_CXR_TEXT
    if result == UNREADABLE:
        return "unreadable file"
    return result


def clean_name(name: str | None) -> str:
    """The uploaded file's base name as display text: no folders, no control characters, bounded."""
    name = PurePosixPath((name or "").replace("\\", "/")).name
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:MAX_NAME] or "(unnamed)"


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(station: Station) -> Starlette:
    limits = station.limits

    async def page(request: Request) -> Response:
        if station.token is not None and request.query_params.get(auth.QUERY) is not None:
            # Trade the token in the URL for a cookie and drop it from the address bar and history.
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(auth.COOKIE, request.query_params[auth.QUERY], httponly=True, samesite="strict")
            return response
        html = resources.files(__package__).joinpath("static", "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return Response("not found", status_code=404, media_type="text/plain")
        body = resources.files(__package__).joinpath("static", name).read_bytes()
        return Response(body, media_type=STATIC[name])

    too_large = (f"upload too large: at most {limits.max_files} files of "
                 f"{limits.max_file_bytes // (1024 * 1024)} MB each")

    async def predict(request: Request) -> Response:
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            return error(411, "the upload must state its length")
        request_cap = limits.max_files * limits.max_file_bytes + FORM_OVERHEAD
        if int(length) > request_cap:
            if int(length) <= DRAIN_LIMIT:
                # Read and drop it, so the client hears the reason instead of a reset connection; counted,
                # since chunked framing may carry more than the length it states.
                try:
                    async for _ in capped(request.stream(), DRAIN_LIMIT):
                        pass
                except RequestTooLarge:
                    pass
            return error(413, too_large)
        async with station.receiving:
            try:
                form, parser = await read_form(request, limits.max_files, limits.max_file_bytes, request_cap)
            except RequestTooLarge:
                return error(413, too_large)
            except MultiPartException as exc:
                return error(400, f"bad upload: {exc.message}")
        reference = "".join(ch for ch in str(form.get("reference") or "") if ch.isprintable()).strip()
        files = [item for item in form.getlist("file") if isinstance(item, UploadFile)]
        if not files:
            await form.close()
            return error(400, "no file in the upload")
        results = []
        try:
            for upload in files:
                name = clean_name(upload.filename)
                arrived = parser.arrived(upload)
                if arrived > limits.max_file_bytes:
                    results.append({"file_name": name, "result": "too_large", "label_text": "file too large",
                                    "error": f"file too large: {arrived / 1e6:.1f} MB (limit "
                                             f"{limits.max_file_bytes // (1024 * 1024)} MB)"})
                    continue
                results.append(await asyncio.get_running_loop().run_in_executor(
                    station.analysers, station.analyse_upload, upload, name, reference[:MAX_REFERENCE]))
        except (sqlite3.OperationalError, OSError) as exc:
            if is_disk_full(exc):
                return error(507, DISK_FULL)
            raise
        finally:
            await form.close()
        return JSONResponse({"results": results})

    async def session(request: Request) -> Response:
        return JSONResponse({"csrf": station.csrf})

    async def results(request: Request) -> Response:
        before = request.query_params.get("before")
        if before is not None and not before.isdigit():
            return error(400, "before must be a row id")
        page = await run_in_threadpool(station.log.today_page, PAGE_ROWS, None if before is None else int(before))
        return JSONResponse(page)

    async def card(request: Request) -> Response:
        return JSONResponse(station.card)

    async def export(request: Request) -> Response:
        day = request.query_params.get("day")
        if day is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
            return error(400, "day must be YYYY-MM-DD")
        name = f"edgecxr-log-{day or 'all'}.csv"
        # A sync iterator: Starlette runs it in a worker thread, one batch of rows at a time.
        return StreamingResponse(station.log.csv_chunks(day), media_type="text/csv; charset=utf-8",
                                 headers={"content-disposition": f'attachment; filename="{name}"'})

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/static/{name}", static, methods=["GET"]),
        Route("/api/predict", predict, methods=["POST"]),
        Route("/api/session", session, methods=["GET"]),
        Route("/api/results", results, methods=["GET"]),
        Route("/api/card", card, methods=["GET"]),
        Route("/export.csv", export, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    return SecurityMiddleware(app, station.token, station.csrf)


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return "disk is full" in str(exc)  # sqlite3: "database or disk is full"


def host_name(header: str) -> str:
    """'127.0.0.1:8080' -> '127.0.0.1', '[::1]:8080' -> '::1', 'localhost' -> 'localhost'."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class SecurityMiddleware:
    """Every response gets the security headers; off loopback (or behind a proxy) every request needs the
    token (cookie, `Authorization: Bearer`, or `?token=` on the page's URL only); every state-changing
    request must come from the station's own page (guards.py)."""

    def __init__(self, app, token: str | None, csrf: str):
        self.app = app
        self.token = token
        self.csrf = csrf

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        if self.token is None and guards.forwarded(request.headers):
            response = Response("this station is behind a proxy but requires no access token: restart it with "
                                "--behind-proxy (docs/station.md)\n", status_code=403,
                                media_type="text/plain; charset=utf-8")
            return await self._with_headers(response)(scope, receive, send)
        if self.token is None and not auth.is_loopback(host_name(request.headers.get("host", ""))):
            # Without a token the station trusts only this machine; a page elsewhere that re-points its
            # own domain name at 127.0.0.1 (DNS rebinding) arrives with its own Host and is turned away.
            response = Response("unexpected Host header: open the station as 127.0.0.1 or localhost\n",
                                status_code=400, media_type="text/plain; charset=utf-8")
            return await self._with_headers(response)(scope, receive, send)
        if self.token is not None and not self._authorised(request):
            response = Response("access token required: open the URL that edgecxr serve printed (it ends in "
                                "?token=...)\n", status_code=401, media_type="text/plain; charset=utf-8")
            return await self._with_headers(response)(scope, receive, send)
        refused = guards.cross_site_reason(request.method, request.headers, self.csrf, self._bearer(request))
        if refused is not None:
            response = JSONResponse({"error": refused}, status_code=403)
            return await self._with_headers(response)(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _with_headers(self, response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    def _bearer(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return (self.token is not None and header.lower().startswith("bearer ")
                and auth.token_matches(self.token, header[7:].strip()))

    def _authorised(self, request: Request) -> bool:
        presented = [request.cookies.get(auth.COOKIE)]
        if request.url.path == "/":  # the printed URL; a token in any other URL would end up in logs
            presented.append(request.query_params.get(auth.QUERY))
        return self._bearer(request) or any(auth.token_matches(self.token, value) for value in presented)
