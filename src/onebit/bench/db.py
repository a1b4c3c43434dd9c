"""The benchmark's results database: one SQLite file per output directory.

Layout (``SCHEMA_VERSION`` 1):

* ``runs`` — one row per run: its id (a hash of what it computes), the suite it came from, its role
  (``"main"`` or ``"sensitivity"``), method (``"fp"`` for a full-precision baseline), architecture and
  its family (``cnn``, ``mlp``, ``transformer``), task (dataset), seed, the full run configuration as
  JSON, status (``"done"`` or ``"failed"`` with the error), code version, machine, start/finish time.
* ``metrics`` — one row per (run, metric name) with a float value. Names are listed in
  :data:`METRICS`; corrupted accuracies are ``corrupt/<corruption>/<severity>``.

A run and all its metrics are written in one transaction, so a killed benchmark leaves either the
whole run or nothing; re-running skips the runs already ``done`` (see :meth:`ResultsDB.done_ids`).
Only the coordinating process writes; workers return their metrics to it.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OnebitError

__all__ = ["METRICS", "SCHEMA_VERSION", "DatabaseError", "NoResultsError", "ResultsDB", "RunRecord", "records_from"]

SCHEMA_VERSION = 1

#: Metric names a run may record (besides ``corrupt/<corruption>/<severity>``), with their meaning.
METRICS: dict[str, str] = {
    "acc": "top-1 test accuracy, % (clean data)",
    "epoch_time_s": "mean wall time of one training epoch, seconds (evaluation excluded)",
    "train_time_s": "total training wall time, seconds",
    "params_1bit": "binary (1-bit) parameters, stored bits counted as bits/1 (multi-bit planes count per plane)",
    "params_32bit": "full-precision parameters",
    "params_bibench": "BiBench params: params_1bit / 32 + params_32bit",
    "bops": "binary multiply-accumulates for one sample",
    "fp_macs": "full-precision multiply-accumulates for one sample, including each method's extra FP ops",
    "flops_bibench": "BiBench FLOPs: bops / 64 + fp_macs",
    "memory_bytes": "parameter memory, bytes (1-bit params at 1 bit, others at 32)",
    "deployable": "1 if the model runs on onebit's packed engine (binarized runs) or in torch (fp), else 0",
    "latency_ms": "batch-1 latency, ms: the packed engine for binarized runs, torch fp32 for fp runs",
    "latency_fp32_ms": "binarized runs: torch fp32 batch-1 latency of the same architecture at full precision, "
                       "timed interleaved with the packed engine in the same process, ms",
    "file_bytes": "deployed file size, bytes: the packed .onebit file, or the fp32 state_dict (safetensors)",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    suite TEXT NOT NULL,
    role TEXT NOT NULL,
    method TEXT NOT NULL,
    arch TEXT NOT NULL,
    family TEXT NOT NULL,
    task TEXT NOT NULL,
    seed INTEGER NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    error TEXT,
    code_version TEXT NOT NULL,
    machine TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (run_id, name)
);
"""


class NoResultsError(OnebitError, ValueError):
    """The results database holds runs, but none finished (every one failed)."""


class DatabaseError(OnebitError, RuntimeError):
    """The results file is not a onebit results database (or is of a newer format)."""


@dataclass
class RunRecord:
    """One finished run: what it was (the identity columns and ``config``) and how it ended."""

    run_id: str
    suite: str
    role: str
    method: str
    arch: str
    family: str
    task: str
    seed: int
    config: dict[str, Any]
    status: str = "done"
    error: str | None = None
    code_version: str = ""
    machine: str = ""
    started: float = 0.0
    finished: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


class ResultsDB:
    """Results of benchmark runs in the SQLite file ``path`` (created on first use).

    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        """Open (``readonly``: without ever writing, e.g. for a report) or create the database at ``path``.

        Raises :class:`DatabaseError` for a corrupt file, a newer schema, or an SQLite database that is
        not onebit's (onebit never adds its tables to a database it did not create).
        """
        self.path = Path(path)
        try:
            if readonly:
                self._con = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                            isolation_level=None)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._con = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(f"{self.path} cannot be opened as a results database ({exc})") from None
        try:
            self._open(readonly)
        except BaseException:
            self._con.close()
            raise

    def _open(self, readonly: bool) -> None:
        with self._reading():
            tables = {name for (name,) in self._con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            row = (self._con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                   if "meta" in tables else None)  # fmt: skip
        if tables and (row is None or "runs" not in tables):
            raise DatabaseError(
                f"{self.path} is an SQLite database but not onebit's results (no onebit schema; tables: "
                f"{', '.join(sorted(tables))}); onebit does not write into a database it did not create: "
                "pass the folder of a `onebit bench` run, or another output directory"
            )
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise DatabaseError(
                f"{self.path} has results schema {row[0]}, newer than this onebit's {SCHEMA_VERSION}: "
                "upgrade onebit to read it"
            )
        if readonly:
            if not tables:
                raise DatabaseError(f"{self.path} holds no onebit results (an empty database)")
            return
        with self._reading():
            self._con.execute("PRAGMA foreign_keys = ON")
            self._con.executescript(_SCHEMA)
            if row is None:
                self._con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """SQLite's "not a database" / "malformed" errors as one :class:`DatabaseError`."""
        try:
            yield
        except sqlite3.OperationalError:
            raise  # locked, read-only, disk full: the caller's to report
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(
                f"{self.path} is not a onebit results database or is corrupt ({exc}); pass another output "
                "directory or remove the file"
            ) from None

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write_run(self, record: RunRecord) -> None:
        """Write ``record`` and its metrics atomically, replacing an earlier row of the same run."""
        for name, value in record.metrics.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
                raise ValueError(f"metric {name!r} of run {record.run_id} must be a finite number, got {value!r}")
        row = asdict(record)
        row.pop("metrics")
        row["config"] = json.dumps(record.config, sort_keys=True)
        columns = list(row)
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute("DELETE FROM metrics WHERE run_id = ?", (record.run_id,))
            con.execute(
                f"INSERT OR REPLACE INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                [row[c] for c in columns],
            )
            con.executemany(
                "INSERT INTO metrics VALUES (?, ?, ?)",
                [(record.run_id, name, float(value)) for name, value in sorted(record.metrics.items())],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def done_ids(self, run_ids: Iterable[str] | None = None) -> set[str]:
        """The ids (among ``run_ids``, or all) of runs that finished successfully."""
        with self._reading():
            done = {r for (r,) in self._con.execute("SELECT run_id FROM runs WHERE status = 'done'")}
        return done if run_ids is None else done & set(run_ids)

    def runs(self, *, suite: str | None = None, status: str | None = "done") -> list[RunRecord]:
        """Runs with their metrics, optionally only those of ``suite`` and/or with ``status``."""
        with self._reading():
            return self._runs(suite, status)

    def _runs(self, suite: str | None, status: str | None) -> list[RunRecord]:
        where, args = [], []
        if suite is not None:
            where.append("suite = ?")
            args.append(suite)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        sql = "SELECT * FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY started, run_id"
        cur = self._con.execute(sql, args)
        names = [d[0] for d in cur.description]
        records = []
        for values in cur.fetchall():
            row = dict(zip(names, values))
            row["config"] = json.loads(row["config"])
            records.append(RunRecord(**row))
        metrics: dict[str, dict[str, float]] = {}
        for run_id, name, value in self._con.execute("SELECT run_id, name, value FROM metrics"):
            metrics.setdefault(run_id, {})[name] = value
        for record in records:
            record.metrics = metrics.get(record.run_id, {})
        return records

    def count(self) -> dict[str, int]:
        """Number of runs per status and of metric rows (for progress and tests)."""
        with self._reading():
            counts = dict(self._con.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
            counts["metrics"] = self._con.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
        return counts


def records_from(source: str | Path | ResultsDB | Iterable[RunRecord]) -> list[RunRecord]:
    """Finished runs from a database path (a file, or a directory holding ``results.sqlite``), an open
    database, or an iterable of records."""
    if isinstance(source, ResultsDB):
        return source.runs()
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            path = path / "results.sqlite"
        if not path.is_file():
            raise FileNotFoundError(f"no results database at {path}: run `onebit bench SUITE --out DIR` first")
        with ResultsDB(path, readonly=True) as db:
            records, counts = db.runs(), db.count()
        if not records and counts.get("failed"):  # not "run onebit bench first": it ran, and failed
            raise NoResultsError(
                f"{path}: every one of its {counts['failed']} runs failed (each run's error is in "
                f"{path.parent / 'runs'}/<run_id>/error.txt); nothing to report"
            )
        return records
    return list(source)
