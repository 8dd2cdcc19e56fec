"""Run stores: ``out=`` of ``harness.run`` takes a database URL (Sacred's SqlObserver: SQLite here, and a real
PostgreSQL server started by the test where Debian's PostgreSQL binaries are installed), and ``harness.runs`` lists
the runs of any store with their method, seed, status, duration, host and key metrics."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile

import pytest

from harness.core.runtime import make_observer, redact_url, store_kind
from harness.eval.results import compact_metrics
from harness.run import main as run_main
from harness.runs import main as runs_main

SMALL = [
    "model.widths=8,16,16,32",
    "model.embedding_size=32",
    "data.input_size=32",
    "optim.batch_size=32",
    "optim.epochs=1",
    "eval.benchmarks=IJBB",
    "threads=1",
]


@pytest.fixture(scope="module")
def trained(tiny_release, tmp_path_factory):
    """One tiny run recorded in an SQLite store: (store URL, checkpoint, result document)."""
    work = tmp_path_factory.mktemp("sqlstore")
    params = work / "params.yaml"
    params.write_text("{}\n")
    url = f"sqlite:///{work / 'runs.db'}"
    ckpt, result = str(work / "model.pt"), str(work / "result.json")
    assert (
        run_main(
            [
                "--params",
                str(params),
                "method=source_only",
                "seed=3",
                f"data.release={tiny_release}",
                f"out={url}",
                f"checkpoint={ckpt}",
                f"result={result}",
                *SMALL,
            ]
        )
        == 0
    )
    with open(result) as f:
        return url, ckpt, json.load(f), str(params)


def _listed(capsys, store) -> list[dict]:
    assert runs_main([store, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_store_kinds_and_redaction():
    assert store_kind("results/runs") == "file" and store_kind("") == ""
    assert store_kind("sqlite:///x.db") == store_kind("postgresql://h/db") == "sql"
    assert store_kind("postgresql+psycopg://h/db") == "sql" and store_kind("mongodb://h/db") == "mongo"
    with pytest.raises(ValueError, match="unknown URL scheme 'ftp'"):
        store_kind("ftp://host/x")
    assert redact_url("postgresql://me:secret@db:5432/runs") == "postgresql://me:***@db:5432/runs"
    assert make_observer("") is None


def test_a_run_recorded_in_sqlite_is_listed_with_its_metrics(trained, capsys):
    url, _, doc, _ = trained
    (row,) = _listed(capsys, url)
    assert (row["method"], row["seed"], row["hparams_seed"], row["status"]) == ("source_only", 3, 0, "COMPLETED")
    assert row["host"] == socket.gethostname() and row["duration"] > 0
    assert row["metrics"]["IJB-B"] == compact_metrics(doc)["IJB-B"]
    assert runs_main([url]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:5] == ["id", "method", "seed", "hp", "status"]
    tar = compact_metrics(doc)["IJB-B"]["tar@0.001"]
    assert table[1].split()[:5] == ["0", "source_only", "3", "0", "COMPLETED"] and f"{100 * tar:.2f}" in table[1]


def test_a_failed_run_is_recorded_as_failed_in_the_sql_store(trained, tiny_release, capsys):
    url, _, _, params = trained
    # a checkpoint that is not one: harness.run fails after Sacred started, the store says FAILED
    bad = os.path.join(os.path.dirname(params), "bad.pt")
    with open(bad, "wb") as f:
        f.write(b"not a checkpoint")
    assert (
        run_main(
            [
                "--params",
                params,
                "method=dann",
                "train=false",
                f"checkpoint={bad}",
                f"data.release={tiny_release}",
                f"out={url}",
                *SMALL,
            ]
        )
        == 2
    )
    capsys.readouterr()
    rows = _listed(capsys, url)
    assert [r["status"] for r in rows] == ["COMPLETED", "FAILED"] and rows[1]["method"] == "dann"


def test_runs_command_errors_are_one_line(tmp_path, capsys):
    assert runs_main([str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.strip() == f"harness.runs: {tmp_path / 'none'}: no such run store folder"
    assert runs_main(["ftp://x/y"]) == 2
    assert "unknown URL scheme 'ftp'" in capsys.readouterr().err
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    assert runs_main([empty]) == 2
    assert "no Sacred runs in this database" in capsys.readouterr().err


def _postgres_bin() -> str | None:
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.isfile(os.path.join(folder, "initdb")) and os.path.isfile(os.path.join(folder, "pg_ctl")):
            return folder
    return shutil.which("initdb") and os.path.dirname(shutil.which("initdb"))


@pytest.fixture
def postgres(tmp_path):
    """A throwaway PostgreSQL server (Debian's binaries), listening on a Unix socket only; yields its URL."""
    pg = _postgres_bin()
    if pg is None:
        pytest.skip(
            "PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin or on PATH): "
            "apt-get install postgresql"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg (SQLAlchemy's PostgreSQL driver) is not installed: pip install -e '.[postgres]'")
    # a short folder of its own that the `postgres` user can reach: a Unix socket path has a ~100-character limit, and
    # the tests' temporary directory (a folder of pytest's tree, conftest.py) is long and private to this user
    top = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    base = os.path.join(top, "cfsm-pg-" + os.urandom(4).hex())
    data, sock = os.path.join(base, "data"), os.path.join(base, "sock")
    os.makedirs(sock)
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root: run them as the `postgres` user
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        for path in (base, sock):
            os.chown(path, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        run_as + [os.path.join(pg, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    port = "54329"
    subprocess.run(
        run_as
        + [
            os.path.join(pg, "pg_ctl"),
            "-D",
            data,
            "-w",
            "-l",
            os.path.join(base, "log"),
            "-o",
            f"-k {sock} -p {port} -c listen_addresses=''",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@/postgres?host={sock}&port={port}"
    finally:
        subprocess.run(
            run_as + [os.path.join(pg, "pg_ctl"), "-D", data, "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)


def test_a_run_recorded_in_postgresql_is_listed(postgres, trained, tiny_release, capsys):
    _, ckpt, doc, params = trained
    # evaluate the trained checkpoint again, recorded in PostgreSQL through the same SQL observer
    result = os.path.join(os.path.dirname(params), "pg_result.json")
    assert (
        run_main(
            [
                "--params",
                params,
                "method=source_only",
                "seed=3",
                "train=false",
                f"checkpoint={ckpt}",
                f"result={result}",
                f"data.release={tiny_release}",
                f"out={postgres}",
                *SMALL,
            ]
        )
        == 0
    )
    capsys.readouterr()
    (row,) = _listed(capsys, postgres)
    assert (row["method"], row["seed"], row["status"]) == ("source_only", 3, "COMPLETED")
    with open(result) as f:
        again = json.load(f)
    assert row["metrics"]["IJB-B"] == compact_metrics(again)["IJB-B"] == compact_metrics(doc)["IJB-B"]
