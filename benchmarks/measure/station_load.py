"""Load test of `edgecxr serve` on loopback: N concurrent clients upload real test/ X-rays.

Starts the station as a real subprocess (its own data folder), sends `--uploads` uploads from
`--clients` threads, one file per request as the page does, and reports errors, answer times
(p50, p95, max) and the rows the log holds afterwards. Also holds the small stdlib HTTP helpers the
station's tests use (no HTTP client library needed).

    python -m edgecxr.benchmarks.measure.station_load MODEL --data DATA --out benchmarks/results/station/NAME.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path
from edgecxr.edge_runtime.python_command import ISOLATED_PYTHON

LOG_FILE = "station.sqlite3"


def start_server(model: Path, data_dir: Path, host: str = "127.0.0.1", port: int = 0,
                 args: tuple[str, ...] = (), timeout: float = 120.0) -> tuple[subprocess.Popen, str, str]:
    """The station in its own process, once it answers. Returns (process, base URL, what it printed).
    Port 0 (default): the station binds a free port itself and its printed URL says which."""
    command = [*ISOLATED_PYTHON, "-c", "import sys; sys.argv[0] = 'edgecxr'; from edgecxr.cli import main; main()",
               "serve", str(model), "--host", host, "--port", str(port), "--data-dir", str(data_dir), *args]
    env = {**os.environ, "COLUMNS": "200"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    # A thread drains its output: a full pipe would stall the server; the lines say where it listens.
    threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True).start()
    deadline = time.monotonic() + timeout
    base = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            time.sleep(0.5)
            raise RuntimeError(f"edgecxr serve exited with {process.returncode}: {''.join(lines)}")
        opened = [line for line in list(lines) if line.startswith("open http://")]
        if opened and base is None:
            port = int(opened[0].split("open http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
            base = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
        if base is not None:
            try:
                urllib.request.urlopen(base + "/", timeout=2).close()
                break
            except urllib.error.HTTPError:
                break  # 401 off loopback: it is up
            except OSError:
                pass
        time.sleep(0.2)
    else:
        process.kill()
        raise RuntimeError(f"edgecxr serve did not answer in time: {''.join(lines)}")
    time.sleep(0.3)  # the lines printed just before serving (the token's) reach the reader thread
    return process, base, "".join(lines)


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def multipart(files: list[tuple[str, bytes]], fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in (fields or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() +
                     value.encode() + b"\r\n")
    for file_name, data in files:
        quoted = file_name.replace('"', "%22")
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def csrf_token(base: str) -> str:
    """The CSRF token the station's page reads (a client without the access token sends it back); empty
    when the station will not give it (no access token), so the POST hears the station's own answer."""
    try:
        with urllib.request.urlopen(base + "/api/session", timeout=30) as response:
            return json.loads(response.read())["csrf"]
    except urllib.error.HTTPError:
        return ""


def post_files(base: str, files: list[tuple[str, bytes]], reference: str = "", token: str | None = None,
               timeout: float = 300.0, csrf: str | None = None) -> tuple[int, dict]:
    """POST files to /api/predict as the page does; (HTTP status, JSON body). Without the access token
    the station's CSRF token goes with it (fetched when not given)."""
    body, content_type = multipart(files, {"reference": reference})
    request = urllib.request.Request(base + "/api/predict", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    else:
        request.add_header("X-Edgecxr-CSRF", csrf if csrf is not None else csrf_token(base))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, {"error": text}


def log_rows(data_dir: Path) -> int:
    with sqlite3.connect(Path(data_dir) / LOG_FILE) as db:
        return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def server_latencies(data_dir: Path) -> list[float]:
    """Each logged result's time inside the station (decode, gate, model, heat map), in ms."""
    with sqlite3.connect(Path(data_dir) / LOG_FILE) as db:
        return [r[0] for r in db.execute("SELECT latency_ms FROM results WHERE latency_ms IS NOT NULL")]


def load_test(model: Path, images: list[Path], data_dir: Path, clients: int = 4, uploads: int = 200,
              heatmaps: bool = True) -> dict:
    process, base, _ = start_server(model, data_dir, args=() if heatmaps else ("--no-heatmap",))
    times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    queue = list(range(uploads))

    def client() -> None:
        while True:
            with lock:
                if not queue:
                    return
                index = queue.pop()
            path = images[index % len(images)]
            started = time.perf_counter()
            try:
                status, body = post_files(base, [(path.name, path.read_bytes())], reference=f"load-{index}")
                ok = status == 200 and body["results"][0].get("result") not in (None, "unreadable")
                problem = None if ok else f"{path.name}: HTTP {status} {str(body)[:200]}"
            except Exception as exc:  # noqa: BLE001 - a benchmark counts failures, it does not stop on them
                problem = f"{path.name}: {type(exc).__name__}: {exc}"
            elapsed = time.perf_counter() - started
            with lock:
                times.append(elapsed)
                if problem:
                    errors.append(problem)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    stop_server(process)
    ms = [t * 1000.0 for t in times]
    inside = server_latencies(data_dir)
    return {"model": str(model), "heatmap": heatmaps, "clients": clients, "uploads": uploads, "errors": len(errors),
            "error_examples": errors[:5], "rows_in_log": log_rows(data_dir), "wall_s": round(wall, 2),
            "uploads_per_s": round(uploads / wall, 2), "answer_ms": {
                "p50": round(percentile(ms, 0.5), 1), "p95": round(percentile(ms, 0.95), 1),
                "max": round(max(ms), 1), "mean": round(statistics.fmean(ms), 1)},
            # From decoding to the logged row, waiting for the model (one request at a time) included.
            "in_station_ms": {"p50": round(percentile(inside, 0.5), 1), "p95": round(percentile(inside, 0.95), 1)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="the chest_xray folder (its test/ is sent)")
    parser.add_argument("--out", type=Path, required=True, help="JSON result file")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--no-heatmap", action="store_true", help="serve with --no-heatmap")
    parser.add_argument("--work", type=Path, default=None, help="the station's data folder (default: next to --out)")
    options = parser.parse_args()
    images = sorted((options.data / "test").glob("*/*.jpeg"))
    # Interleave the two classes so every client sees both.
    normal = [p for p in images if p.parent.name == "NORMAL"]
    pneumonia = [p for p in images if p.parent.name == "PNEUMONIA"]
    mixed = [p for pair in zip(pneumonia, normal) for p in pair]
    work = options.work or options.out.with_suffix(".station")
    if (work / LOG_FILE).exists():
        raise SystemExit(f"{work / LOG_FILE} exists: give a fresh --work folder")
    result = load_test(options.model, mixed, work, options.clients, options.uploads,
                       heatmaps=not options.no_heatmap)
    from edgecxr.edge_runtime.versions import package_versions

    result.update(command=" ".join(["python -m edgecxr.benchmarks.measure.station_load", *sys.argv[1:]]),
                  date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  machine={"platform": platform.platform(), "processor": platform.processor(),
                           "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
                           "versions": package_versions(("edgecxr", "numpy", "pillow", "onnxruntime",
                                                         "ai-edge-litert", "starlette", "uvicorn"))})
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
