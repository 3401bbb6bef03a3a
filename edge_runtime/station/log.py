"""The station's log: one SQLite row per result, committed before the page is answered.

WAL journal with synchronous=FULL: a commit is on disk when it returns, so a crash or power cut
loses at most the request in flight, and readers (the results list, the CSV export) never block
the writer. One connection behind a lock serves the server's threads; the site monitor's verdict
is computed inside the same lock, so each row's verdict covers exactly the rows before it.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from ..text_cells import safe_cell

LOG_FILE = "station.sqlite3"
# The CSV export and the results list: every column but the monitored projection (numbers for the
# site monitor, meaningless to a reader).
COLUMNS = ("id", "time", "day", "reference", "file_name", "image_sha256", "result", "probability", "threshold",
           "gate", "gate_distance", "warnings", "monitor", "monitor_message", "model_sha256", "commissioning", "latency_ms",
           "kept_image")
SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,            -- UTC, ISO 8601
    day TEXT NOT NULL,             -- the station's local date: the results list of the day
    reference TEXT NOT NULL,       -- film or patient reference typed by the user ('' if none)
    file_name TEXT NOT NULL,       -- as uploaded; text only, never used as a path
    image_sha256 TEXT NOT NULL,
    result TEXT NOT NULL,          -- a label, not_cxr or unreadable
    probability REAL,
    threshold REAL NOT NULL,
    gate TEXT NOT NULL,            -- 'accepted' or why the input gate refused / could not read it
    gate_distance REAL,
    warnings TEXT NOT NULL,        -- what the decoder noticed but did not refuse (e.g. a CT slice), '; '-joined
    monitor TEXT NOT NULL,         -- the site monitor's verdict over the day's X-rays so far
    monitor_message TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    commissioning TEXT NOT NULL,   -- 'site NAME, DATE' or 'none'
    latency_ms REAL,
    kept_image TEXT NOT NULL,      -- file name under images/ if kept, else ''
    projection TEXT                -- JSON list: the image along the monitored components
);
CREATE INDEX IF NOT EXISTS results_day ON results(day);
"""


@dataclass
class Entry:
    """What the app knows about one upload; the log adds time, day, id and the monitor's verdict."""

    reference: str
    file_name: str
    image_sha256: str
    result: str
    probability: float | None
    threshold: float
    gate: str
    gate_distance: float | None
    model_sha256: str
    commissioning: str
    latency_ms: float | None
    kept_image: str = ""
    warnings: str = ""
    projection: tuple[float, ...] | None = None


def local_day(now: datetime) -> str:
    return now.astimezone().date().isoformat()


class StationLog:
    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / LOG_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record(self, entry: Entry, monitor: Callable[[list[float], list[list[float]]], tuple[str, str]]) -> dict:
        """Write one result and return its row. `monitor(probabilities, projections)` gets the day's
        accepted X-rays including this one and returns (verdict, message)."""
        now = datetime.now(timezone.utc)
        day = local_day(now)
        with self._lock:
            probabilities, projections = self._day_sample(day)
            if entry.projection is not None and entry.probability is not None:
                probabilities.append(entry.probability)
                projections.append(list(entry.projection))
            verdict, message = monitor(probabilities, projections)
            row = {
                "time": now.isoformat(timespec="milliseconds"), "day": day, "reference": entry.reference,
                "file_name": entry.file_name, "image_sha256": entry.image_sha256, "result": entry.result,
                "probability": entry.probability, "threshold": entry.threshold, "gate": entry.gate,
                "gate_distance": entry.gate_distance, "warnings": entry.warnings, "monitor": verdict, "monitor_message": message,
                "model_sha256": entry.model_sha256, "commissioning": entry.commissioning,
                "latency_ms": entry.latency_ms, "kept_image": entry.kept_image,
                "projection": None if entry.projection is None else json.dumps(list(entry.projection)),
            }
            names = ", ".join(row)
            marks = ", ".join("?" * len(row))
            # Autocommit mode: the INSERT is its own transaction, durable when execute returns.
            cursor = self._db.execute(f"INSERT INTO results ({names}) VALUES ({marks})", tuple(row.values()))
            row["id"] = cursor.lastrowid
        row.pop("projection")
        return row

    def _day_sample(self, day: str) -> tuple[list[float], list[list[float]]]:
        rows = self._db.execute("SELECT probability, projection FROM results WHERE day = ? AND projection IS NOT "
                                "NULL AND probability IS NOT NULL ORDER BY id", (day,)).fetchall()
        return [r["probability"] for r in rows], [json.loads(r["projection"]) for r in rows]

    def rows(self, day: str | None = None) -> list[dict]:
        """The log's rows (of one local day, or all), newest first."""
        query = f"SELECT {', '.join(COLUMNS)} FROM results"
        args: tuple = ()
        if day is not None:
            query += " WHERE day = ?"
            args = (day,)
        with self._lock:
            return [dict(r) for r in self._db.execute(query + " ORDER BY id DESC", args).fetchall()]

    def today(self) -> list[dict]:
        return self.rows(local_day(datetime.now(timezone.utc)))

    def csv_chunks(self, day: str | None = None) -> Iterator[str]:
        """The log as CSV, oldest first, formula-like text cells quoted with a leading apostrophe."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(COLUMNS)
        for row in reversed(self.rows(day)):
            writer.writerow([safe_cell(row[name]) for name in COLUMNS])
            if buffer.tell() > 1 << 16:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

