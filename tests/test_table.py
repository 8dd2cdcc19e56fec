"""The table generator against a golden file (DomainBed's `test_collect_results` idea), from hand-made results."""

from __future__ import annotations

import json
import pathlib

import pytest

from harness.table import main as table_main
from harness.table import make_tables

GOLDEN = pathlib.Path(__file__).parent / "golden" / "table.md"


def _doc(method: str, seed: int, shift: float) -> dict:
    tar = {"1e-06": 0.5 + shift, "1e-05": 0.55 + shift, "0.0001": 0.6 + shift, "0.001": 0.7 + shift, "0.01": 0.8 + shift, "0.1": 0.9 + shift}
    gap = {"stills_only": {"tar_at_far": {"0.001": 0.98}}, "with_video": {"tar_at_far": {"0.001": 0.6 + shift}}}
    knobs = {"flip": "sum", "faceness": True}
    return {
        "method": method,
        "seed": seed,
        "results": [
            {"benchmark": "IJB-B", "tar_at_far": tar, "by_probe_media": gap, "knobs": knobs},
            {"benchmark": "IJB-B 1:N", "joined": {"rank1": 0.9 + shift, "rank5": 0.95}, "knobs": knobs},
            {"benchmark": "IJB-S", "V2S": {"rank1": 0.3 + shift, "rank5": 0.4, "tpir@fpir=0.01": None, "tpir@fpir=0.1": 0.2}, "knobs": {"fusion": "mean"}},
            {"benchmark": "TinyFace", "rank1": 0.25 + shift, "rank5": 0.35, "rank20": 0.5, "knobs": {"flip": "sum"}},
        ],
    }


def _docs() -> list[dict]:
    return [_doc("source_only", 0, 0.0), _doc("source_only", 1, 0.02), _doc("zeta_method", 0, 0.05)]


def test_table_matches_the_golden_file():
    assert make_tables(_docs()) == GOLDEN.read_text(encoding="utf-8")


def test_table_cli_reads_result_files_and_rejects_bad_ones(tmp_path, capsys):
    for i, d in enumerate(_docs()):
        (tmp_path / f"r{i}.json").write_text(json.dumps(d))
    out = tmp_path / "t" / "table.md"
    assert table_main([str(tmp_path), "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == GOLDEN.read_text(encoding="utf-8")
    (tmp_path / "bad.json").write_text('{"method": "x", "seed": 0}')
    assert table_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad.json:field results" in err and err.count("\n") == 1


@pytest.mark.parametrize("cell", ["71.00 ± 1.41", "| 75.00 |", "| - |"])
def test_golden_file_holds_means_stds_and_missing_cells(cell):
    """Guards the golden file itself: mean ± sample std over seeds, a single seed, a missing (None) value."""
    assert cell in GOLDEN.read_text(encoding="utf-8")
