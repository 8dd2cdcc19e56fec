"""The Markdown outputs: ``tables.md`` (the tables, the training cost, the protocol knobs, the published numbers)
and ``REPORT.md`` (the tables, then whether our runs reproduce the ordering the paper claims, the other methods
against the reference, our cells against the published ones). Every number in them is computed from the input
files (:mod:`harness.report.summary`)."""

from __future__ import annotations

import json
import math

import numpy as np

from harness.eval.registry import Section
from harness.report.cells import DOWN, ONE_SEED, UP, VERDICT, diff_text, md_cell, md_pub_diff, md_table, pct
from harness.report.generators import FD_RATIO_MAX, IDENTITY_GAP_MIN, fd_text, gap_text, quality_text, verdict_text
from harness.report.published import paper_blocks, paper_tables, paper_title, published_rows
from harness.report.sections import (
    CLAIM_METHODS,
    TABLE_FARS,
    bench_order,
    claim_columns,
    column_text,
    far_label,
    present_sections,
)
from harness.report.summary import Tables, mark_of, paired

__all__ = [
    "tables_markdown",
    "synthface_markdown",
    "paper_markdown",
    "report_markdown",
    "seed_text",
    "seed_scope",
    "generator_rows",
    "generators_markdown",
    "missed_generators",
]


def seed_text(t: Tables) -> str:
    return "; ".join(f"{m} {len(t.seeds[m])} ({', '.join(map(str, t.seeds[m]))})" for m in t.methods)


def _legend(t: Tables, where: str) -> list[str]:
    multi = any(len(t.seeds[m]) >= 2 for m in t.methods)
    text = (
        "Cells: mean ± sample std over seeds (n = seeds), in %; `-`: not reported or undefined; `(n=k)`: defined "
        "for k seeds only. "
    )
    if multi:
        text += (
            f"{UP} / {DOWN}: the 95% CI of the paired difference from `{t.reference}` lies above / below 0; no "
            f"mark: the CI includes 0. CIs: two-level bootstrap ({t.n_boot} resamples, seed {t.seed}): "
            f"the training seeds resampled with "
            f"replacement (two methods with the same seeds paired seed by seed), then the probe subjects with all "
            f"their items (one subject draw per resample, shared by every seed and method), so they cover training "
            f"randomness as well as the test subjects. Marks only where both methods have two or more seeds in the "
            f"cell; a method with one seed (n = 1) gets the subject-bootstrap CI of that run and no mark ({ONE_SEED}). "
        )
    else:
        text += (
            f"No significance marks ({UP} / {DOWN}): every method has one seed here ({ONE_SEED}). "
            f"The CIs are subject-bootstrap intervals of one training "
            f"run each ({t.n_boot} resamples, seed {t.seed}: probe subjects resampled with all their items, every "
            f"method on the same resamples); they do not cover training randomness. "
        )
    text += f"The CI of every cell and of every difference: {where}."
    out = [text]
    if any(c.published for c in t.cells.values()):
        out += [
            "",
            "`↳ published`: the published number of the same model (method, backbone, training set), benchmark and "
            "metric, as printed by its source; `↳ ours − published`: our mean minus it (percentage points) with our "
            "cell's 95% CI shifted by it (the published number has no interval). Only results on the real benchmark "
            "data are matched; SynthFace results never are.",
        ]
    return out


def _section_data(t: Tables, s: Section) -> list[str]:
    """A section's data line, when the inputs are not all on one kind of data (the title says it otherwise)."""
    if t.data_label(t.present)[0] in ("synthface", "real"):
        return []
    return [f"Data: {t.data_label([c.benchmark for c in s.columns])[1]}.", ""]


def synthface_markdown(
    t: Tables,
    where: str = "`tables.csv` (ci_low/ci_high, diff_ci_low/diff_ci_high) and `tables.tex`",
    level: str = "##",
) -> list[str]:
    """The result tables (whatever the data; the name is historical), the training cost and the protocol knobs."""
    out = [f"Methods and seeds: {seed_text(t)}. Reference: `{t.reference}`.", "", *_legend(t, where), ""]
    for s in present_sections(t.present):
        rows = []
        for m in t.methods:
            rows.append([m, str(len(t.seeds[m]))] + [md_cell(t, m, t.cell(m, c)) for c in s.columns])
            rows += published_rows(t, m, s, md_pub_diff)
            rows += generator_rows(t, m, len(s.columns))
        out += [
            f"{level} {s.title}",
            "",
            *_section_data(t, s),
            *md_table(["method", "n"] + [c.label for c in s.columns], rows),
            "",
        ]
    out += generators_markdown(t, level)
    out += _cost_markdown(t, level)
    out += [f"{level} Protocol knobs", ""]
    for b in sorted(t.present, key=bench_order):
        sets: dict[str, list[str]] = {}
        for r in t.runs:
            if b in r.rows:
                sets.setdefault(json.dumps(r.rows[b].get("knobs", {}), sort_keys=True), []).append(
                    r.name.removesuffix(".json")
                )
        for k, names in sets.items():
            who = "every result" if len(sets) == 1 else ", ".join(names)
            out.append(f"- {b} ({who}): `{k}`")
    return out + [""]


def generator_rows(t: Tables, m: str, n_columns: int) -> list[list[str]]:
    """The rows under method ``m``'s row saying the quality of the CFSM generator(s) its runs used (none for a
    method without a generator)."""
    uses = [u for u in t.generators if u.method == m]
    seeds = len(uses) > 1
    return [
        [
            f"↳ generator `{u.generator}`"
            + (f" (seeds {', '.join(map(str, u.seeds))})" if seeds else "")
            + ": "
            + quality_text(u.targets),
            "",
        ]
        + [""] * n_columns
        for u in uses
    ]


def missed_generators(t: Tables) -> list[str]:
    """One sentence per generator that missed its targets, naming the CFSM rows it produced ([] when none did)."""
    by_gen: dict[str, list] = {}
    for u in t.generators:
        if u.targets.met is False:
            by_gen.setdefault(u.generator, []).append(u)
    return [
        f"**The generator `{g}` missed its stage-1 targets** ({'; '.join(us[0].targets.misses())}): the rows of "
        f"{', '.join(f'`{u.method}`' for u in us)} were trained with it, so they show CFSM with a generator that "
        f"does not do what stage 1 is meant to do, not CFSM as the paper trains it."
        for g, us in by_gen.items()
    ]


def generators_markdown(t: Tables, level: str) -> list[str]:
    """The CFSM generators behind the rows and their quality (absent when no run used a generator)."""
    if not t.generators:
        return []
    rows = [
        [
            u.method,
            ", ".join(map(str, u.seeds)),
            f"`{u.generator}`",
            fd_text(u.targets),
            gap_text(u.targets),
            verdict_text(u.targets),
        ]
        for u in t.generators
    ]
    out = [
        f"{level} CFSM generators",
        "",
        f"The stage-1 generator behind each CFSM row, from the `metrics.json` beside it: FD ratio = FD(G(source), "
        f"target) / FD(source, target), target at most {FD_RATIO_MAX:g}; identity gap = cos(clean, G(clean)) − "
        f"cos(clean, degraded) on SynthFace's clean/degraded pairs, target at least {IDENTITY_GAP_MIN:g}.",
        "",
        *md_table(["method", "seeds", "generator", "FD ratio", "identity gap", "targets"], rows),
        "",
    ]
    missed = missed_generators(t)
    unknown = [u for u in t.generators if u.targets.met is None and not u.targets.source]
    unassessed = [u for u in t.generators if u.targets.met is None and u.targets.source]
    if missed:
        out += [*missed, ""]
    if unassessed:
        out += [
            f"Not assessed: {', '.join(f'`{u.generator}` ({u.method})' for u in unassessed)}: its data had no "
            f"clean/degraded pairs, so the identity gap, and with it the targets, could not be measured (the FD "
            f"ratio is shown).",
            "",
        ]
    if unknown:
        out += [
            f"Not measured: {', '.join(f'`{u.generator}` ({u.method})' for u in unknown)} has no stage-1 "
            f"`metrics.json` beside it (e.g. an imported generator), so its quality is unknown.",
            "",
        ]
    return out


def _cost_markdown(t: Tables, level: str) -> list[str]:
    """Training time per method from the documents' train info (absent when no result carries one): what each
    method costs on the machine that trained it, against the reference trained there too."""
    secs = {
        m: [
            float(r.train["seconds"])
            for r in t.runs
            if r.method == m and isinstance(r.train.get("seconds"), (int, float))
        ]
        for m in t.methods
    }
    if not any(secs.values()):
        return []
    ref = float(np.mean(secs[t.reference])) if secs.get(t.reference) else None
    rows = []
    for m in t.methods:
        if not secs[m]:
            rows.append([m, "0", "-", "-", "-", "-"])
            continue
        runs = [r for r in t.runs if r.method == m and "seconds" in r.train]
        mean = float(np.mean(secs[m]))
        ips = [
            float(r.train["images_per_second"])
            for r in runs
            if isinstance(r.train.get("images_per_second"), (int, float))
        ]
        devices = sorted({str(r.train.get("device", "?")) for r in runs})
        rows.append(
            [
                m,
                str(len(secs[m])),
                f"{mean:.0f}" + (f" ± {np.std(secs[m], ddof=1):.0f}" if len(secs[m]) > 1 else ""),
                f"{np.mean(ips):.0f}" if ips else "-",
                f"{mean / ref:.2f}" if ref else "-",
                ", ".join(devices),
            ]
        )
    return [
        f"{level} Training cost",
        "",
        "Wall-clock seconds of each training run (mean over seeds), images/s and the ratio to the reference, from "
        "the result files' train info; the runs share one schedule, so the ratio is the method's cost per step "
        "(measured on whatever else the machine was doing at the time).",
        "",
        *md_table(["method", "n", "seconds", "images/s", f"x {t.reference}", "device"], rows),
        "",
    ]


def _title(t: Tables) -> str:
    kind, text = t.data_label(t.present)
    if kind == "synthface":
        return "SynthFace results (a procedural stand-in benchmark; these are not the paper's numbers)"
    if kind == "real":
        return f"Results on {text}"
    if kind == "unknown":
        return f"Results on {text}"
    return "Results on mixed data (each section names its data)"


def paper_markdown(t: Tables, level: str = "#") -> list[str]:
    if t.paper is None:
        return []
    sub = level + "#"
    title, sentence = paper_title(t)
    out = ["---", "", f"{level} {title}", "", sentence, ""]
    for (source, backbone, train_set), ns in paper_blocks(t.paper):
        out += [f"{sub} {source}: backbone {backbone}, train set {train_set}", ""]
        tables, extra = paper_tables(ns)
        for s, cols, ms, got in tables:
            rows = [[m] + [got.get((m, c.name), "-") for c in cols] for m in ms]
            out += [f"{s.title.split(':')[0]}:", "", *md_table(["method"] + [c.label for c in cols], rows), ""]
        if extra:
            out += [
                "Also published: " + "; ".join(f"{n.method} {n.benchmark} {n.metric} {n.value_text}" for n in extra),
                "",
            ]
    return out


def tables_markdown(t: Tables) -> str:
    out = [f"# {_title(t)}", ""]
    out += synthface_markdown(t)
    out += paper_markdown(t)
    return "\n".join(out).rstrip("\n") + "\n"


def _compare(t: Tables, a: str, b: str, c) -> tuple[tuple[float, float, float] | None, int | str | None]:
    """(difference and CI, verdict): +1 / -1 / 0 as :func:`harness.report.summary.mark_of`, ``"one seed"`` when a side
    has one seed in the cell (no verdict), None when a side has no result or no CI."""
    ca, cb = t.cell(a, c), t.cell(b, c)
    if ca is None or cb is None:
        return None, None
    d = paired(ca, cb, c.key)
    if d is None or not (math.isfinite(d[1]) and math.isfinite(d[2])):
        return None, None
    return d, (mark_of((d[1], d[2])) if ca.two_level and cb.two_level else "one seed")


def _resolution_note(t: Tables) -> list[str]:
    notes = []
    for b in ("IJB-B", "IJB-C"):
        n_imp = None
        for r in t.runs:
            if r.method == t.reference and b in r.rows:
                n_imp = r.rows[b].get("counts", {}).get("impostor")
                break
        if not isinstance(n_imp, int) or n_imp <= 0:
            continue
        low = [far_label(x) for x in TABLE_FARS if x * n_imp < 1]
        if low:
            notes.append(
                f"{b} has {n_imp:,} impostor pairs, so TAR@FAR {', '.join(low)} {'is' if len(low) == 1 else 'are'} "
                f"below its resolution"
            )
    return (
        [
            f"Resolution: {'; '.join(notes)} (FAR × impostor pairs < 1: the nearest ROC vertex is at no false accept "
            f"or at a single one). These cells are shown as computed but say little.",
            "",
        ]
        if notes
        else []
    )


def _report_head(t: Tables) -> list[str]:
    kind, text = t.data_label(t.present)
    if kind == "synthface":
        return [
            "# Reproduction report: CFSM and baselines on SynthFace",
            "",
            "SynthFace is a procedural stand-in benchmark written in the IJB-B/C, IJB-S and TinyFace layouts: **the "
            "SynthFace numbers below are not the paper's numbers** and cannot be compared with them; only the "
            "orderings of methods can be compared with the paper's claims.",
            "",
        ]
    if kind == "real":
        return [
            "# Reproduction report: CFSM and baselines on the real benchmarks",
            "",
            f"Data: {text} (no `synthface.json` in any dataset's release folder). Where a row reproduces a published "
            f"model (same method, backbone, training set), the published number of each benchmark and metric stands "
            f'beside it, with the difference; see also "Against the published numbers" below.',
            "",
        ]
    if kind == "unknown":
        return [
            "# Reproduction report: CFSM and baselines",
            "",
            f"Data: {text}: these results are not labelled SynthFace or real, and none is matched with the "
            f"published numbers.",
            "",
        ]
    return [
        "# Reproduction report: CFSM and baselines on mixed data",
        "",
        f"The inputs are on different data: {text}. Each table section names its data; only results on the real "
        f"benchmark data are matched with published numbers, SynthFace results never are.",
        "",
    ]


def seed_scope(t: Tables) -> str:
    if any(len(t.seeds[m]) >= 2 for m in t.methods):
        return (
            "The intervals come from a two-level bootstrap (training seeds resampled with replacement, then the "
            "probe subjects), so they cover training randomness; a method with one seed gets the subject interval "
            f"of that run and no mark or verdict ({ONE_SEED})."
        )
    return (
        f"Every method has one seed: the intervals cover the sampling of test subjects only, not training "
        f"randomness, so no mark or verdict is given ({ONE_SEED})."
    )


def _one_seed_text(t: Tables, a: str, b: str, cells: list, listed: bool = True) -> str:
    """Why ``cells`` (``(column, difference)``) get no verdict, and which way their differences go."""
    one = [f"`{m}`" for m in (a, b) if len(t.seeds[m]) < 2]
    who = (
        f"{' and '.join(one)} {'has' if len(one) == 1 else 'have'} one seed"
        if one
        else "a side has one seed in these cells"
    )
    higher = sum(1 for _, d in cells if d[0] > 0)
    return (
        f"{who} ({ONE_SEED}); `{a}` is higher on {higher} of these {len(cells)} cells, lower or equal on "
        f"{len(cells) - higher}" + (f" ({', '.join(column_text(c) for c, _ in cells)})" if listed else "")
    )


def _claims(t: Tables) -> list[str]:
    ref = t.reference
    guided, random_ = CLAIM_METHODS
    comps = [(guided, ref), (random_, ref), (guided, random_)]
    cols = claim_columns(t.present)
    ok = [(a, b) for a, b in comps if a in t.methods and b in t.methods and a != b]
    out = []
    if ok:
        out += _resolution_note(t)
        rows, tally = [], {cmp: {1: [], -1: [], 0: [], "one seed": [], None: []} for cmp in ok}
        for c in cols:
            row = [column_text(c)]
            for a, b in ok:
                d, verdict = _compare(t, a, b, c)
                tally[(a, b)][verdict].append((c, d))
                row.append("-" if d is None else f"{diff_text(d)} {VERDICT[verdict]}")
            rows.append(row)
        out += md_table(["cell"] + [f"`{a}` − `{b}`" for a, b in ok], rows) + [""]
    for a, b in comps:
        claim = ">=" if (a, b) == (guided, random_) else ">"
        missing = [m for m in dict.fromkeys((a, b)) if m not in t.methods]
        if a == b:
            out.append(f"- `{a}` {claim} `{b}`: not assessed: `{a}` is the reference itself.")
            continue
        if missing:
            out.append(
                f"- `{a}` {claim} `{b}`: not assessed: "
                f"no results of {' and '.join(f'`{m}`' for m in missing)} in the inputs."
            )
            continue
        tl = tally[(a, b)]
        names = lambda k, tl=tl: ", ".join(column_text(c) for c, _ in tl[k])  # noqa: E731
        n = len(tl[1]) + len(tl[-1]) + len(tl[0])  # cells tested (two or more seeds on both sides)
        if n == 0 and not tl["one seed"]:
            overall = "not assessed (no cell has both methods)"
        elif n == 0:
            overall = f"not tested: {_one_seed_text(t, a, b, tl['one seed'], False)}"
        elif tl[-1]:
            overall = (
                f"not reproduced: the opposite ordering is significant on {len(tl[-1])} of {n} cells ({names(-1)})"
            )
        elif len(tl[1]) == n:
            overall = f"reproduced on all {n} cells tested"
        else:
            overall = (
                (
                    f"partly reproduced: {len(tl[1])} of {n} cells show the claimed ordering significantly; the "
                    f"CIs of the other {len(tl[0])} include 0 (inconclusive)"
                )
                if tl[1]
                else f"inconclusive: the CIs of all {n} cells include 0"
            )
        line = f"- `{a}` {claim} `{b}`: {overall}."
        if tl[1] and (tl[-1] or len(tl[1]) < n):
            line += f" Reproduced on: {names(1)}."
        if n and tl["one seed"]:
            line += f" Not tested on {len(tl['one seed'])} more: {_one_seed_text(t, a, b, tl['one seed'])}."
        if tl[None]:
            line += f" No result on: {names(None)}."
        out.append(line)
    return out + [""]


def _others(t: Tables, tables_dir: str) -> list[str]:
    ref = t.reference
    cols = claim_columns(t.present)
    others = [m for m in t.methods if m != ref and m not in CLAIM_METHODS]
    out = ["## Other methods against the reference", ""]
    if not others:
        besides = [f"`{m}`" for m in dict.fromkeys([ref, *CLAIM_METHODS]) if m in t.methods]
        return out + [f"No other method has results (besides {', '.join(besides)}).", ""]
    for m in others:
        marks: dict = {1: [], -1: [], 0: [], "one seed": [], None: []}
        for c in cols:
            d, verdict = _compare(t, m, ref, c)
            marks[verdict].append((c, d))
        n = len(cols) - len(marks[None])
        seeds = f"{len(t.seeds[m])} seed{'s' if len(t.seeds[m]) != 1 else ''}"
        n_t = len(marks[1]) + len(marks[-1]) + len(marks[0])
        head = f"- `{m}` ({seeds}) vs `{ref}` on the {n} low-quality cells: "
        if n_t:
            head += (
                f"significantly better on {len(marks[1])}, significantly worse on {len(marks[-1])}, inconclusive "
                f"(CI includes 0) on {len(marks[0])}"
            )
        if marks["one seed"]:
            head += ("; not tested on the other cells: " if n_t else "not tested: ") + _one_seed_text(
                t, m, ref, marks["one seed"], bool(n_t)
            )
        if not n_t and not marks["one seed"]:
            head += "no cell has both methods"
        if marks[None]:
            head += f"; no result on {', '.join(column_text(c) for c, _ in marks[None])}"
        out.append(head + ".")
        for mk, word in ((1, "better"), (-1, "worse")):
            if marks[mk]:
                out.append(f"  - {word}: " + "; ".join(f"{column_text(c)} {diff_text(d)}" for c, d in marks[mk]))
    return out + ["", f"Every cell's difference and CI, for every column: `{tables_dir}/tables.csv`.", ""]


def _against_published(t: Tables) -> list[str]:
    rows = []
    for s in present_sections(t.present):
        for c in s.columns:
            for m in t.methods:
                cell = t.cell(m, c)
                for n, d, ci in cell.published if cell else []:
                    rows.append(
                        [
                            column_text(c),
                            f"`{m}` ({len(cell.values)} seed{'s' if len(cell.values) != 1 else ''})",
                            f"{n.method} {n.backbone} {n.train_set} ({n.source})",
                            pct(cell.mean),
                            n.value_text,
                            md_pub_diff(d, ci),
                        ]
                    )
    if not rows:
        return []
    return [
        "## Against the published numbers",
        "",
        "Every cell whose model, benchmark and metric a source publishes: our seed mean, the published number as "
        "printed, and ours − published in percentage points with our 95% CI shifted by the published number "
        "(the published number itself has no interval; a CI excluding 0 says our run differs from it beyond the "
        "sampling our CI covers).",
        "",
        *md_table(["cell", "ours", "published model", "ours %", "published %", "ours − published"], rows),
        "",
    ]


def _generator_note(t: Tables) -> list[str]:
    """Under the claim: the quality of the generators the CFSM rows come from, plainly when one missed its targets."""
    if not t.generators:
        return []
    gens = list(dict.fromkeys(u.generator for u in t.generators))
    text = "; ".join(
        f"`{g}` ({', '.join(f'`{u.method}`' for u in t.generators if u.generator == g)}): "
        f"{quality_text(next(u.targets for u in t.generators if u.generator == g))}"
        for g in gens
    )
    which = "this stage-1 generator" if len(gens) == 1 else "these stage-1 generators"
    missed = [f"{m} A verdict on these rows is a verdict on that generator." for m in missed_generators(t)]
    return [f"The CFSM rows come from {which}: {text}.", "", *[x for m in missed for x in (m, "")]]


def report_markdown(t: Tables, tables_dir: str = "tables", before_tables: list[str] | None = None) -> str:
    """The report; ``tables_dir``: where the tables are, relative to the report's folder; ``before_tables``: lines
    put before the tables (the model selection of ``--select``)."""
    ref = t.reference
    kind = t.data_label(t.present)[0]
    out = [
        *_report_head(t),
        f"Inputs: {len(t.runs)} result files ({', '.join(r.name for r in t.runs)}). Seeds per method: {seed_text(t)}. "
        f"Bootstrap: {t.n_boot} resamples (seed {t.seed}), 95% percentile intervals; differences are paired (the same "
        f"resamples for every method). {seed_scope(t)}",
        "",
        *(before_tables or []),
        "## SynthFace tables" if kind == "synthface" else "## Tables",
        "",
        *synthface_markdown(t, f"`{tables_dir}/tables.csv` and `{tables_dir}/tables.tex`", "###"),
        "## The paper's claim",
        "",
        f"CFSM (Liu et al., ECCV 2022) claims that training with guided CFSM augmentation is at least as good as with "
        f"random CFSM augmentation, and that both beat training without it (`{ref}`), on the low-quality sets: "
        f"TinyFace, IJB-S, and IJB-B/C TAR at low FAR. Below, every such cell, as the difference of the seed means "
        f'(percentage points) with the 95% CI of the paired bootstrap. Verdict per cell: "reproduced" when '
        f'the CI lies entirely on the claimed side of 0, "not reproduced" when it lies entirely on the other side, '
        f'"inconclusive: CI includes 0" otherwise, and no verdict where a side has one seed ({ONE_SEED}). Each claim '
        f"is assessed when both of its methods have results.",
        "",
        *_generator_note(t),
        *_claims(t),
        *_others(t, tables_dir),
        *_against_published(t),
    ]
    out += paper_markdown(t, "##")
    return "\n".join(out).rstrip("\n") + "\n"
