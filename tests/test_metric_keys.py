"""The compact metric key grammar (:mod:`harness.eval.metric_keys`): every key the benchmarks write parses back to
itself, the bootstrap metrics name their numbers with the same keys, and the published-number patterns accept
exactly the keys the writers produce."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from harness.eval import metric_keys as mk
from harness.eval.registry import metric_patterns, row_metrics, sections
from harness.report.bootstrap import IJBSTpirAtFpir, RankK, TarAtFar

RESULTS = pathlib.Path(__file__).parent / "golden" / "tables" / "results"


def test_writers_and_parser_agree():
    cases = {
        mk.tar_key(1e-4): ("tar", "0.0001", None),
        mk.tar_key(0.001, "stills_only"): ("tar", "0.001", "stills_only"),
        mk.rank_key(5, "joined"): ("rank", 5, "joined"),
        mk.rank_key(20): ("rank", 20, None),
        mk.tpir_key(0.01, block="V2S"): ("tpir@fpir", "0.01", "V2S"),
        mk.tpir_key(0.1, "far", "joined"): ("tpir@far", "0.1", "joined"),
        "accuracy_std": ("name", "accuracy_std", None),
    }
    assert list(cases)[:4] == ["tar@0.0001", "stills_only.tar@0.001", "joined.rank5", "rank20"]
    for key, (kind, arg, block) in cases.items():
        k = mk.parse(key)
        assert (k.kind, k.arg, k.block) == (kind, arg, block) and str(k) == key
    for bad in ("", "tar@", "V2S.", "a b", "rank1.5x"):
        with pytest.raises(ValueError):
            mk.parse(bad)
    with pytest.raises(ValueError, match="at must be"):
        mk.tpir_key(0.1, "fnir")
    assert [mk.display_name(k) for k in ("rank5", "tpir@fpir=0.01", "tpir@far=0.1", "accuracy")] == [
        "Rank-5",
        "TPIR@FPIR=0.01",
        "TPIR@FAR=0.1",
        "accuracy",
    ]


def test_every_written_key_parses_back_and_matches_its_pattern():
    """The keys of real result rows (the golden fake results) and of every table column."""
    patterns = metric_patterns()
    seen = 0
    for path in sorted(RESULTS.glob("*.json")):
        for row in json.loads(path.read_text())["results"]:
            for key in row_metrics(row):
                assert str(mk.parse(key)) == key
                assert patterns[row["benchmark"]].fullmatch(key), (row["benchmark"], key)
                seen += 1
    assert seen > 20
    for s in sections():
        for c in s.columns:
            assert str(mk.parse(c.key)) == c.key and patterns[c.benchmark].fullmatch(c.key), c.key
    assert not patterns["IJB-B"].fullmatch("tar@0.5") and not patterns["IJB-S"].fullmatch("joined.rank1")


def test_bootstrap_metric_keys_are_the_grammar():
    rng = np.random.default_rng(0)
    scores, labels = rng.random(50), (np.arange(50) % 2).astype(np.int64)
    tar = TarAtFar(scores, labels, (1e-3, 0.1), prefix="with_video.")
    assert tar.keys == [mk.tar_key(1e-3, "with_video"), mk.tar_key(0.1, "with_video")]
    assert RankK(np.arange(10), (1, 5), prefix="joined.").keys == [mk.rank_key(1, "joined"), mk.rank_key(5, "joined")]
    gal = [(np.ones(4, bool), np.ones(4, bool), rng.random(4))] * 2
    assert IJBSTpirAtFpir(gal, (0.01,), prefix="V2S.").keys == [mk.tpir_key(0.01, block="V2S")]
