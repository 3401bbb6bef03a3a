"""The station's memory and responsiveness under hostile uploads and slow clients (issue 27's goals).

Starts `edgecxr serve MODEL` (heat maps on, as a clinic runs it) as a real subprocess for each scenario and
reads the server's peak resident memory (VmHWM in /proc) after it:
- one upload of each hostile file ≤ 40 MB: a deflated DICOM that inflates to 1 GiB, flat PNGs of just under
  20 MP (8-bit gray, 16-bit gray, RGBA), 40 MB of noise named .png, a real film, and that film at 20 MP;
- 16 such uploads in parallel (the PNG bombs and the DICOM bomb, mixed);
- 1,000 connections that send half a request line and stop, then one real upload: its answer time.
Goals: ≤ 600 MB for any single upload, ≤ 1 GB with 16 in parallel, the upload answered within 5 s.

    python -m edgecxr.benchmarks.measure.station_hostile runs/demo/export/model_int8.tflite --data DATA \\
        --out benchmarks/results/station_hostile
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path


from .hostile_uploads import deflated_dicom_bomb, png_bomb
from .station_load import csrf_token, post_files, start_server, stop_server
from .published import publish

MB = 1024 * 1024
SINGLE_GOAL_MB, PARALLEL_GOAL_MB, SLOW_GOAL_S = 600, 1024, 5.0


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def uploads(film: Path) -> dict[str, tuple[str, bytes]]:
    return {
        "deflated DICOM, 1 GiB inflated": ("bomb.dcm", deflated_dicom_bomb(1 << 30)),
        "PNG 20 MP 8-bit gray": ("gray.png", png_bomb(5000, 3999, "L")),
        "PNG 20 MP 16-bit gray": ("gray16.png", png_bomb(5000, 3999, "I;16")),
        "PNG 20 MP RGBA": ("rgba.png", png_bomb(5000, 3999, "RGBA")),
        "40 MB of noise as .png": ("noise.png", b"\x89PNG\r\n\x1a\n" + os.urandom(40 * MB - 16)),
        "real film (JPEG)": (film.name, film.read_bytes()),
        "real film upsampled to 20 MP (JPEG, gate accepts, heat map drawn)": ("big.jpeg", upsampled(film)),
    }


def upsampled(film: Path) -> bytes:
    """A real film at the pixel budget: what a full-size detector image costs the whole path."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    with Image.open(film) as image:
        image.convert("L").resize((5000, 3999), Image.BICUBIC).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def scenario(model: Path, work: Path, send) -> dict:
    process, base, _ = start_server(model, work)
    try:
        baseline = peak_rss_mb(process.pid)
        started = time.perf_counter()
        outcome = send(base)
        seconds = time.perf_counter() - started
        return {"peak_rss_mb": round(peak_rss_mb(process.pid), 1), "rss_after_start_mb": round(baseline, 1),
                "seconds": round(seconds, 2), **outcome}
    finally:
        stop_server(process)


def single(name: str, data: bytes):
    def send(base: str) -> dict:
        status, body = post_files(base, [(name, data)])
        item = (body.get("results") or [{}])[0]
        return {"status": status, "result": item.get("result"), "error": item.get("error")}
    return send


def parallel(files: list[tuple[str, bytes]]):
    def send(base: str) -> dict:
        csrf = csrf_token(base)
        answers: list[tuple[int, str | None]] = []

        def one(name: str, data: bytes) -> None:
            status, body = post_files(base, [(name, data)], csrf=csrf)
            answers.append((status, (body.get("results") or [{}])[0].get("result")))

        threads = [threading.Thread(target=one, args=item) for item in files]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {"uploads": len(files), "answered": sum(status == 200 for status, _ in answers),
                "results": sorted({str(result) for _, result in answers})}
    return send


def slow_clients(film: Path, count: int):
    def send(base: str) -> dict:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        sockets = []
        try:
            for _ in range(count):
                sock = socket.create_connection((host, int(port)), timeout=10)
                sock.sendall(b"GET / HTTP/1.1\r\nHost: ")
                sockets.append(sock)
            started = time.perf_counter()
            status, body = post_files(base, [(film.name, film.read_bytes())])
            answer_s = time.perf_counter() - started
            return {"slow_connections": len(sockets), "status": status, "result": body["results"][0]["result"],
                    "answer_s": round(answer_s, 3)}
        finally:
            for sock in sockets:
                sock.close()
    return send


def markdown(result: dict) -> str:
    lines = [f"# Station under hostile uploads ({result['date']})", "", f"`{result['command']}`", "",
             f"Machine: {result['machine']}. Model: `{result['model']}` (heat maps on).", "",
             "| scenario | answer | peak RSS MB | goal MB | met |", "|:--|:--|--:|--:|:--|"]
    for row in result["single"]:
        lines.append(f"| {row['name']} | {row['result']}: {row.get('error') or ''} | {row['peak_rss_mb']} | "
                     f"{SINGLE_GOAL_MB} | {'yes' if row['peak_rss_mb'] <= SINGLE_GOAL_MB else 'NO'} |")
    row = result["parallel"]
    lines.append(f"| {row['uploads']} hostile uploads in parallel | {row['answered']} answered | {row['peak_rss_mb']} | "
                 f"{PARALLEL_GOAL_MB} | {'yes' if row['peak_rss_mb'] <= PARALLEL_GOAL_MB else 'NO'} |")
    row = result["slow"]
    lines += ["", f"{row['slow_connections']} half-open connections: a real upload answered {row['result']} in "
                  f"{row['answer_s']} s (goal {SLOW_GOAL_S} s: {'met' if row['answer_s'] <= SLOW_GOAL_S else 'NOT met'})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="the chest_xray folder (one test/ film is sent)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/station_hostile"))
    parser.add_argument("--slow", type=int, default=1000)
    args = parser.parse_args(argv)
    film = sorted((args.data / "test" / "PNEUMONIA").glob("*.jpeg"))[0]
    files = uploads(film)
    result = {"model": str(args.model), "command": "python -m edgecxr.benchmarks.measure.station_hostile "
              + " ".join(argv or sys.argv[1:]), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                         f"{platform.platform()}", "single": []}
    with tempfile.TemporaryDirectory() as tmp:
        for index, (name, (file_name, data)) in enumerate(files.items()):
            row = scenario(args.model, Path(tmp) / f"single{index}", single(file_name, data))
            result["single"].append({"name": name, "bytes": len(data), **row})
            print(f"{name}: {row}", file=sys.stderr, flush=True)
        hostile = [files[k] for k in ("PNG 20 MP 8-bit gray", "PNG 20 MP 16-bit gray", "PNG 20 MP RGBA",
                                      "deflated DICOM, 1 GiB inflated")] * 4
        result["parallel"] = scenario(args.model, Path(tmp) / "parallel", parallel(hostile))
        print(f"parallel: {result['parallel']}", file=sys.stderr, flush=True)
        result["slow"] = scenario(args.model, Path(tmp) / "slow", slow_clients(film, args.slow))
        print(f"slow: {result['slow']}", file=sys.stderr, flush=True)
    return publish(args.out, "station_hostile", result, markdown(result))


if __name__ == "__main__":
    sys.exit(main())
