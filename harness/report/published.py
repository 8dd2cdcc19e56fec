"""The published numbers in the tables: beside our rows on real data (the same model, benchmark and metric), and in
their own blocks below the tables, one per source, backbone and training set (:mod:`harness.report.paper_numbers`
reads them)."""

from __future__ import annotations

from harness.eval.registry import Section
from harness.report.paper_numbers import PaperNumber
from harness.report.sections import SECTIONS

__all__ = ["PAPER_TITLE", "published_groups", "published_rows", "paper_blocks", "paper_tables", "paper_title"]


def published_groups(t, m: str, s: Section) -> dict:
    """``{(source, method, backbone, train set): {column name: (number, diff, ci)}}`` beside method m's row."""
    out: dict = {}
    for c in s.columns:
        cell = t.cell(m, c)
        for n, d, ci in cell.published if cell else []:
            out.setdefault((n.source, n.method, n.backbone, n.train_set), {})[c.name] = (n, d, ci)
    return out


def published_rows(t, m: str, s: Section, diff_fmt) -> list[list[str]]:
    rows = []
    for (source, pm, bb, ts), got in published_groups(t, m, s).items():
        rows.append(
            [f"↳ published: {pm} {bb} {ts} ({source})", ""]
            + [got[c.name][0].value_text if c.name in got else "-" for c in s.columns]
        )
        rows.append(
            ["↳ ours − published", ""] + [diff_fmt(*got[c.name][1:]) if c.name in got else "-" for c in s.columns]
        )
    return rows


def paper_blocks(numbers: list[PaperNumber]) -> list[tuple[tuple[str, str, str], list[PaperNumber]]]:
    blocks: dict[tuple[str, str, str], list[PaperNumber]] = {}
    for n in numbers:
        blocks.setdefault((n.source, n.backbone, n.train_set), []).append(n)
    return list(blocks.items())


def paper_tables(ns: list[PaperNumber]):
    """[(section, columns, methods, {(method, column name): text})] of one block, and the numbers outside them."""
    got = {(n.method, f"{n.benchmark} {n.metric}"): n.value_text for n in ns}
    methods = list(dict.fromkeys(n.method for n in ns))
    out = []
    for s in SECTIONS:
        cols = [c for c in s.columns if any((m, c.name) in got for m in methods)]
        if cols:
            ms = [m for m in methods if any((m, c.name) in got for c in cols)]
            out.append((s, cols, ms, got))
    used = {c.name for _, cols, _, _ in out for c in cols}
    extra = [n for n in ns if f"{n.benchmark} {n.metric}" not in used]
    return out, extra


PAPER_TITLE = "Published numbers (real datasets, not comparable with SynthFace)"


def paper_title(t) -> tuple[str, str]:
    """The published block's title and the sentence under it, by what our results are on."""
    kind = t.data_label(t.present)[0]
    printed = (
        "As printed by each source (in %), on the real IJB-B/C, IJB-S and TinyFace with full-size models trained "
        "on real data."
    )
    if kind == "real":
        return (
            "Published numbers (as printed by each source)",
            f"{printed} The numbers of the same model, benchmark and metric as one of our rows also stand beside that "
            f"row above, with the difference.",
        )
    if kind == "synthface":
        return PAPER_TITLE, f"{printed} Never compare these with the SynthFace tables above."
    if kind == "unknown":
        return (
            "Published numbers (real datasets)",
            f"{printed} Our results do not record their data (see above), so none of them is matched with these.",
        )
    return (
        PAPER_TITLE,
        f"{printed} Never compare these with the SynthFace results above; the published numbers of the "
        f"same model as a row on real data stand beside that row.",
    )
