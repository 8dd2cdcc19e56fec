"""``tables.csv``: the tables in long format, one row per (method, benchmark, metric), then one column per protocol
knob (the union over all rows). Values are percentages with four decimals."""

from __future__ import annotations

import csv
import io
import math

from harness.report.cells import ONE_SEED, csv_num
from harness.report.sections import present_sections
from harness.report.summary import Tables

__all__ = ["CSV_COLUMNS", "tables_csv"]


CSV_COLUMNS = (
    "method",
    "n_seeds",
    "seeds",
    "benchmark",
    "metric",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "diff_vs_reference",
    "diff_ci_low",
    "diff_ci_high",
    "significant",
    "ci_method",
    "mark_note",
    "data",
    "published",
    "published_source",
    "diff_vs_published",
    "diff_vs_published_ci_low",
    "diff_vs_published_ci_high",
)


def tables_csv(t: Tables) -> str:
    knobs = sorted({k for c in t.cells.values() for k in c.knobs})
    head = list(CSV_COLUMNS) + [k if k not in CSV_COLUMNS else f"knob_{k}" for k in knobs]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    for s in present_sections(t.present):
        for c in s.columns:
            for m in t.methods:
                cell = t.cell(m, c)
                if cell is None:
                    continue
                ci = cell.ci or (None, None)
                dci = cell.diff_ci or (None, None)
                has_dci = cell.diff_ci is not None and all(map(math.isfinite, cell.diff_ci))
                ref = t.cell(t.reference, c)
                one_seed = has_dci and not (cell.two_level and ref is not None and ref.two_level)
                sig = "" if not has_dci or one_seed else ("true" if cell.mark else "false")
                method = "" if cell.samples is None else "seeds+subjects" if cell.two_level else "subjects (one seed)"
                kinds = sorted(
                    {r.data.kind(c.benchmark) for r in t.runs if r.method == m and c.benchmark in r.rows and r.data}
                )
                pub = cell.published
                w.writerow(
                    [
                        m,
                        len(cell.values),
                        ";".join(map(str, cell.seeds)),
                        c.benchmark,
                        c.key,
                        csv_num(cell.mean),
                        csv_num(cell.std),
                        csv_num(ci[0]),
                        csv_num(ci[1]),
                        csv_num(cell.diff),
                        csv_num(dci[0]),
                        csv_num(dci[1]),
                        sig,
                        method,
                        ONE_SEED if one_seed else "",
                        " | ".join(kinds),
                        " | ".join(n.value_text for n, _, _ in pub),
                        " | ".join(f"{n.source}: {n.method} {n.backbone} {n.train_set}" for n, _, _ in pub),
                        " | ".join(csv_num(d) for _, d, _ in pub),
                        " | ".join(csv_num(ci[0]) if ci else "" for _, _, ci in pub),
                        " | ".join(csv_num(ci[1]) if ci else "" for _, _, ci in pub),
                    ]
                    + [cell.knobs.get(k, "") for k in knobs]
                )
    return buf.getvalue()
