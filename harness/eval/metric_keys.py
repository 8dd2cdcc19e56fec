"""The compact metric key grammar: the one module that writes and reads the names of ``dvc metrics``,
``harness.run.compact_metrics``, the table columns, the bootstrap metrics and ``results/paper/*.csv``.

::

    key    := [block "."] metric
    block  := "joined" | "open_set" | "V2S" | "V2B" | "V2V" | "stills_only" | "with_video" | ...
    metric := "tar@" FAR | "rank" K | "tpir@fpir=" X | "tpir@far=" X | name
    FAR, X := harness.eval.roc.far_key of the number (``str(float(x))``: 1e-06, 0.0001, 0.01, 1.0)

e.g. ``tar@0.0001`` (IJB-B 1:1), ``stills_only.tar@0.001``, ``joined.rank1`` (IJB 1:N), ``V2S.tpir@fpir=0.01``
(IJB-S), ``rank20`` (TinyFace), ``accuracy`` (a ``.bin`` set). The metric part is also the field name the evaluators
write in their rows (``tar_at_far`` keys aside), as insightface's and AdaFace's scripts print them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from harness.eval.roc import far_key

__all__ = ["MetricKey", "tar_key", "rank_key", "tpir_key", "with_block", "parse", "display_name", "pattern", "any_of"]

_TPIR_AT = ("fpir", "far")
_METRIC = re.compile(r"tar@(?P<tar>[0-9.e+-]+)|rank(?P<rank>[0-9]+)|tpir@(?P<at>fpir|far)=(?P<x>[0-9.e+-]+)")


def with_block(metric: str, block: str | None = None) -> str:
    """``block.metric`` (just ``metric`` without a block)."""
    return f"{block}.{metric}" if block else metric


def tar_key(far: float | str, block: str | None = None) -> str:
    """``[block.]tar@<far>``: TAR at a FAR (IJB 1:1); ``far`` a number or a row's FAR key (kept as given)."""
    return with_block(f"tar@{far if isinstance(far, str) else far_key(far)}", block)


def rank_key(k: int, block: str | None = None) -> str:
    """``[block.]rank<k>``: Rank-k identification rate."""
    return with_block(f"rank{int(k)}", block)


def tpir_key(x: float | str, at: str = "fpir", block: str | None = None) -> str:
    """``[block.]tpir@<at>=<x>``: TPIR at an FPIR (open set) or at a FAR (IJB 1:N joined); ``x`` a number or an
    evaluator's grid name (kept as given)."""
    if at not in _TPIR_AT:
        raise ValueError(f"tpir_key: at must be one of {_TPIR_AT}, got {at!r}")
    return with_block(f"tpir@{at}={x if isinstance(x, str) else far_key(x)}", block)


@dataclass(frozen=True)
class MetricKey:
    """A key taken apart: ``block`` (None without one), ``kind`` (``tar``, ``rank``, ``tpir@fpir``, ``tpir@far`` or
    ``name``), ``arg`` (the FAR/FPIR text, the rank as an int, or the metric name)."""

    block: str | None
    kind: str
    arg: str | int

    @property
    def metric(self) -> str:
        if self.kind == "tar":
            return f"tar@{self.arg}"
        if self.kind == "rank":
            return f"rank{self.arg}"
        if self.kind.startswith("tpir@"):
            return f"{self.kind}={self.arg}"
        return str(self.arg)

    def __str__(self) -> str:
        return with_block(self.metric, self.block)


def parse(key: str) -> MetricKey:
    """The inverse of the writers above: ``parse(str(k)) == k``. A key not of the grammar is a ``ValueError``."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"{key!r} is not a metric key")
    head = key.split("@")[0]
    block = head.rsplit(".", 1)[0] if "." in head else ""
    metric = key[len(block) + 1 :] if block else key
    m = _METRIC.fullmatch(metric)
    if m is None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", metric):
            raise ValueError(f"{key!r} is not a metric key (e.g. tar@0.0001, joined.rank1, V2S.tpir@fpir=0.01)")
        return MetricKey(block or None, "name", metric)
    if m["tar"] is not None:
        return MetricKey(block or None, "tar", m["tar"])
    if m["rank"] is not None:
        return MetricKey(block or None, "rank", int(m["rank"]))
    return MetricKey(block or None, f"tpir@{m['at']}", m["x"])


def display_name(key: str) -> str:
    """The printed name of a metric: ``rank5`` -> ``Rank-5``, ``tpir@fpir=0.01`` -> ``TPIR@FPIR=0.01``,
    ``tpir@far=0.1`` -> ``TPIR@FAR=0.1``; other keys as they are."""
    try:
        k = parse(key)
    except ValueError:
        return key
    if k.kind == "rank":
        return with_block(f"Rank-{k.arg}", k.block)
    if k.kind.startswith("tpir@"):
        return with_block(f"TPIR@{k.kind.split('@')[1].upper()}={k.arg}", k.block)
    return key


def _alt(texts: Iterable[str]) -> str:
    return "(?:" + "|".join(re.escape(t) for t in texts) + ")"


def pattern(
    blocks: Iterable[str | None] = (None,),
    tar: Iterable[float] = (),
    rank: bool = False,
    tpir: Iterable[tuple[str, float | str]] = (),
    names: Iterable[str] = (),
) -> re.Pattern:
    """The regex of the keys a benchmark's rows may have: any of ``blocks`` (None: no block) followed by
    ``tar@<far>`` for the FARs ``tar``, ``rank<k>`` for any k (``rank``), ``tpir@<at>=<x>`` for the ``(at, x)`` of
    ``tpir``, or one of ``names``. Written with the writers above, so that it matches exactly what they write."""
    metrics = [tar_key(x) for x in tar] + [tpir_key(x, at) for at, x in tpir] + list(names)
    parts = [_alt(metrics)] if metrics else []
    if rank:
        parts.append("rank[0-9]+")
    if not parts:
        raise ValueError("pattern: no metric given")
    metric = "(?:" + "|".join(parts) + ")"
    blocks = list(blocks)
    named = [b for b in blocks if b]
    head = (_alt(f"{b}." for b in named) + ("?" if None in blocks else "")) if named else ""
    return re.compile(head + metric)


def any_of(*patterns: re.Pattern) -> re.Pattern:
    """One regex matching what any of ``patterns`` matches."""
    return re.compile("|".join(f"(?:{p.pattern})" for p in patterns))
