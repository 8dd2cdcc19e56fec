"""Read the runs of a Sacred run store, whichever kind it is, as one list of rows (``python -m harness.runs``).

A store is what ``out=`` of ``harness.run`` (and ``observer:`` of a sweep file) names
(:func:`harness.core.runtime.store_kind`):

- a folder of Sacred's FileStorageObserver (``results/runs/<id>/run.json``, ``config.json``, ``info.json``: the
  layout of ``sacred/observers/file_storage.py``, sacred 0.8.7);
- an SQL database written by Sacred's SqlObserver (``sqlite:///FILE``, ``postgresql://HOST/DB``): tables ``run``
  (``run_id``, ``status``, ``start_time``, ``heartbeat``, ``stop_time``, ``config`` and ``info`` as JSON text) and
  ``host`` (``hostname``), as ``sacred/observers/sql_bases.py`` declares them;
- a MongoDB database written by Sacred's MongoObserver (``mongodb://HOST/DB``, collection ``runs``; needs
  ``pymongo``), the store Omniboard reads.

Each row: ``id, method, seed, hparams_seed, status, start, duration`` (seconds: stop - start, or last heartbeat -
start while running), ``host`` and ``metrics``, the compact ``{benchmark: {metric: value}}`` the run put in
``info["result"]`` (:func:`harness.eval.results.compact_metrics`). Nothing in a store runs code: JSON only.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

from harness.core.errors import DataFormatError
from harness.core.runtime import redact_url, store_kind

#: (benchmark, compact metric key, column title) shown by default: one headline number per benchmark.
KEY_METRICS = (
    ("IJB-B", "tar@0.001", "IJB-B TAR@1e-3"),
    ("IJB-C", "tar@0.001", "IJB-C TAR@1e-3"),
    ("IJB-S", "V2S.rank1", "IJB-S V2S R1"),
    ("TinyFace", "rank1", "TinyFace R1"),
)


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _row(run_id: Any, config: dict, info: dict, status: str, start, stop, heartbeat, host: str) -> dict:
    start_t, end_t = _time(start), _time(stop) or _time(heartbeat)
    result = info.get("result") if isinstance(info, dict) else None
    return {
        "id": str(run_id),
        "method": config.get("method"),
        "seed": config.get("seed"),
        "hparams_seed": config.get("hparams_seed"),
        "train": config.get("train", True) is not False,  # False: an evaluation-only run (train=false)
        "release": config["data"].get("release") if isinstance(config.get("data"), dict) else None,
        "status": status,
        "start": start_t.strftime("%Y-%m-%d %H:%M:%S") if start_t else None,
        "duration": (end_t - start_t).total_seconds() if start_t and end_t else None,
        "host": host,
        "metrics": result if isinstance(result, dict) else {},
    }


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(path, None, f"not a Sacred run file ({exc})") from None


def file_runs(folder: str) -> list[dict]:
    """The runs of a FileStorageObserver folder (sub-folders with a ``run.json``; ``_sources`` and others skipped)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such run store folder")
    rows = []
    for name in os.listdir(folder):
        run_json = os.path.join(folder, name, "run.json")
        if not os.path.isfile(run_json):
            continue
        run = _read_json(run_json)
        config = _read_json(os.path.join(folder, name, "config.json"))
        info = _read_json(os.path.join(folder, name, "info.json"))
        host = (run.get("host") or {}).get("hostname", "") if isinstance(run, dict) else ""
        rows.append(
            _row(
                name,
                config if isinstance(config, dict) else {},
                info if isinstance(info, dict) else {},
                run.get("status", "?"),
                run.get("start_time"),
                run.get("stop_time"),
                run.get("heartbeat"),
                host,
            )
        )
    return rows


def file_run_metrics(folder: str, run_id: str) -> dict[str, dict[int, float]]:
    """The logged scalars of one run of a FileStorageObserver folder: ``{name: {step: value}}`` from its
    ``metrics.json`` (Sacred's ``{name: {"steps": [...], "values": [...], "timestamps": [...]}}``); ``{}`` when the
    run logged nothing. A malformed file is one :class:`DataFormatError` naming the file and the metric."""
    path = os.path.join(folder, str(run_id), "metrics.json")
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DataFormatError(path, None, "not a Sacred metrics file (expected a JSON object)")
    out = {}
    for name, series in data.items():
        steps = series.get("steps") if isinstance(series, dict) else None
        values = series.get("values") if isinstance(series, dict) else None
        if not isinstance(steps, list) or not isinstance(values, list) or len(steps) != len(values):
            raise DataFormatError(path, name, "expected equally long 'steps' and 'values' lists")
        try:
            out[name] = {int(k): float(v) for k, v in zip(steps, values)}
        except (TypeError, ValueError):
            raise DataFormatError(path, name, "a step or value is not a number") from None
    return out


def sql_runs(url: str) -> list[dict]:
    """The runs of a database written by Sacred's SqlObserver (read with plain SQL through SQLAlchemy)."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("run"):
                raise ValueError(f"{redact_url(url)}: no Sacred runs in this database (no table 'run')")
            result = conn.execute(
                sa.text(
                    "SELECT r.run_id, r.status, r.start_time, r.stop_time, r.heartbeat, r.config, r.info, h.hostname "
                    "FROM run r LEFT JOIN host h ON r.host_id = h.host_id ORDER BY r.id"
                )
            )
            records = result.fetchall()
    except sa.exc.SQLAlchemyError as exc:
        raise ValueError(f"{redact_url(url)}: {' '.join(str(exc).split())[:300]}") from None
    finally:
        if "engine" in locals():
            engine.dispose()
    rows = []
    for run_id, status, start, stop, heartbeat, config, info, host in records:
        rows.append(
            _row(
                run_id, json.loads(config or "{}"), json.loads(info or "{}"), status, start, stop, heartbeat, host or ""
            )
        )
    return rows


def mongo_runs(url: str) -> list[dict]:
    """The runs of a MongoObserver database (``runs`` collection; the database named in the URL, else ``sacred``,
    MongoObserver's default)."""
    try:
        import pymongo
    except ImportError:
        raise ValueError(f"{redact_url(url)}: reading a MongoDB store needs pymongo (pip install pymongo)") from None
    client = pymongo.MongoClient(url)
    try:
        db = client.get_default_database(default="sacred")
        return [
            _row(
                doc.get("_id"),
                doc.get("config") or {},
                doc.get("info") or {},
                doc.get("status", "?"),
                doc.get("start_time"),
                doc.get("stop_time"),
                doc.get("heartbeat"),
                (doc.get("host") or {}).get("hostname", ""),
            )
            for doc in db.runs.find({}, {"captured_out": 0}).sort("_id")
        ]
    finally:
        client.close()


def list_runs(store: str) -> list[dict]:
    """Every run of ``store`` (a folder or a database URL), oldest id first."""
    kind = store_kind(store)
    if kind == "sql":
        return sql_runs(store)
    if kind == "mongo":
        return mongo_runs(store)
    if kind == "":
        raise ValueError("run store: empty (a folder such as results/runs or a database URL)")
    rows = file_runs(store)
    return sorted(rows, key=lambda r: (0, int(r["id"])) if r["id"].isdigit() else (1, r["id"]))


def metric_value(row: dict, benchmark: str, key: str) -> float | None:
    value = (row["metrics"].get(benchmark) or {}).get(key)
    return value if isinstance(value, (int, float)) else None


def format_runs(rows: list[dict], metrics=KEY_METRICS) -> str:
    """A plain-text table of :func:`list_runs` rows; metrics in percent (2 decimals), ``-`` where absent."""
    head = ["id", "method", "seed", "hp", "status", "start", "duration", "host"] + [m[2] for m in metrics]
    body = []
    for r in rows:
        cells = [
            r["id"],
            r["method"] or "?",
            _cell(r["seed"]),
            _cell(r["hparams_seed"]),
            r["status"],
            r["start"] or "-",
            f"{r['duration']:.0f}s" if r["duration"] is not None else "-",
            r["host"] or "-",
        ]
        for bench, key, _ in metrics:
            v = metric_value(r, bench, key)
            cells.append(f"{100 * v:.2f}" if v is not None else "-")
        body.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body]]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)
