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


def selected_rows(*conditions: tuple[str, object]) -> tuple[str, tuple]:
    """A SELECT of every column with the conditions whose value is given (None: left out), and its
    parameters: values are always bound, never written into the SQL."""
    used = [(clause, value) for clause, value in conditions if value is not None]
    where = " AND ".join(clause for clause, _ in used) or "1"
    return f"SELECT {', '.join(COLUMNS)} FROM results WHERE {where}", tuple(value for _, value in used)


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
        # The site monitor's sample of the current day, read from the log once and then appended to:
        # a result never re-reads the day.
        self._sample_day: str | None = None
        self._sample: tuple[list[float], list[list[float]]] = ([], [])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record(self, entry: Entry, monitor: Callable[[list[float], list[list[float]]], tuple[str, str]]) -> dict:
        """Write one result and return its row. `monitor(probabilities, projections)` gets the day's
        accepted X-rays including this one and returns (verdict, message)."""
        now = datetime.now(timezone.utc)
        day = local_day(now)
        with self._lock:
            if self._sample_day != day:
                self._sample_day, self._sample = day, self._day_sample(day)
            probabilities, projections = self._sample
            sampled = entry.projection is not None and entry.probability is not None
            if sampled:
                probabilities.append(entry.probability)
                projections.append(list(entry.projection))
            try:
                verdict, message = monitor(probabilities, projections)
            except BaseException:
                self._drop_last(sampled)
                raise
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
            try:
                cursor = self._db.execute(f"INSERT INTO results ({names}) VALUES ({marks})", tuple(row.values()))
            except BaseException:  # not logged (a full disk): not in the sample either
                self._drop_last(sampled)
                raise
            row["id"] = cursor.lastrowid
        row.pop("projection")
        return row

    def _drop_last(self, sampled: bool) -> None:
        if sampled:
            self._sample[0].pop()
            self._sample[1].pop()

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

    def today_page(self, limit: int, before: int | None = None) -> dict:
        """At most `limit` of today's rows older than row id `before` (newest first), the day's count, and
        the id to ask for the next page with (None on the last)."""
        day = local_day(datetime.now(timezone.utc))
        query, args = selected_rows(("day = ?", day), ("id < ?", before))
        with self._lock:
            rows = [dict(r) for r in self._db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, limit + 1))]
            total = self._db.execute("SELECT COUNT(*) FROM results WHERE day = ?", (day,)).fetchone()[0]
        more = len(rows) > limit
        rows = rows[:limit]
        return {"rows": rows, "total": total, "next_before": rows[-1]["id"] if more else None}

    def csv_chunks(self, day: str | None = None, batch: int = 500) -> Iterator[str]:
        """The log as CSV, oldest first, formula-like text cells quoted with a leading apostrophe; read a
        batch of rows at a time, so a long log is never held whole."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(COLUMNS)
        last = 0
        while True:
            query, args = selected_rows(("id > ?", last), ("day = ?", day))
            with self._lock:
                rows = self._db.execute(query + " ORDER BY id LIMIT ?", (*args, batch)).fetchall()
            for row in rows:
                writer.writerow([safe_cell(row[name]) for name in COLUMNS])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            if len(rows) < batch:
                return
            last = rows[-1]["id"]

