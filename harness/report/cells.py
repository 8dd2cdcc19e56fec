"""How a number, a cell and its mark are printed, in Markdown, LaTeX and CSV: percentages with two decimals
(four in the CSV), ``-0.00`` printed as ``0.00``, ``▲`` / ``▼`` marks, ``(n=k)`` for a cell defined on fewer seeds
than its method has."""

from __future__ import annotations

import math

__all__ = [
    "UP",
    "DOWN",
    "ONE_SEED",
    "VERDICT",
    "pct",
    "signed",
    "n_note",
    "md_cell",
    "md_table",
    "md_pub_diff",
    "diff_text",
    "tex",
    "tex_num",
    "tex_cell",
    "tex_table",
    "csv_num",
]

UP, DOWN = "▲", "▼"
ONE_SEED = "one seed: training randomness not covered, no marks"
VERDICT = {1: "reproduced", -1: "not reproduced", 0: "inconclusive: CI includes 0", "one seed": "no verdict (one seed)"}


def pct(x: float) -> str:
    s = f"{100 * x:.2f}"
    return "0.00" if s == "-0.00" else s


def signed(x: float) -> str:
    s = f"{100 * x:+.2f}"
    return "+0.00" if s == "-0.00" else s


def n_note(t, m: str, cell) -> str:
    """`` (n=k)`` when the cell has fewer seeds than method ``m`` has in the tables ``t``."""
    return f" (n={len(cell.values)})" if len(cell.values) < len(t.seeds[m]) else ""


def md_cell(t, m: str, cell) -> str:
    if cell is None:
        return "-"
    s = pct(cell.mean) + (f" ± {pct(cell.std)}" if cell.std is not None else "")
    return s + n_note(t, m, cell) + {1: UP, -1: DOWN}.get(cell.mark, "")


def md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def md_pub_diff(d: float, ci: tuple[float, float] | None) -> str:
    return signed(d) + (f" [{signed(ci[0])}, {signed(ci[1])}]" if ci else "")


def diff_text(d: tuple[float, float, float]) -> str:
    return f"{signed(d[0])} [{signed(d[1])}, {signed(d[2])}]"


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "—": "---",
    "–": "--",
    "−": "-",
    "↳": r"$\hookrightarrow$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "<": "$<$",
    ">": "$>$",
}


def tex(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s)


def tex_num(x: float, signed_: bool = False) -> str:
    return (signed if signed_ else pct)(x).replace("-", "$-$")


def tex_cell(t, m: str, cell) -> tuple[str, str]:
    if cell is None:
        return "--", ""
    v = pct(cell.mean) + (rf" \pm {pct(cell.std)}" if cell.std is not None else "")
    mark = {1: r"^{\uparrow}", -1: r"^{\downarrow}"}.get(cell.mark, "")
    main = f"${v}{mark}$" + tex(n_note(t, m, cell))
    ci = (
        rf"{{\tiny [{tex_num(cell.ci[0])}, {tex_num(cell.ci[1])}]}}"
        if cell.ci and all(map(math.isfinite, cell.ci))
        else ""
    )
    return main, ci


def tex_table(caption: str, head: list[str], rows: list[list[str]]) -> list[str]:
    return [
        r"\begin{table}[ht]",
        r"\centering",
        r"\scriptsize",
        r"\setlength{\tabcolsep}{3pt}",
        r"\begin{tabular}{l" + "c" * (len(head) - 1) + "}",
        r"\toprule",
        " & ".join(head) + r" \\",
        r"\midrule",
        *[" & ".join(r) + r" \\" for r in rows],
        r"\bottomrule",
        r"\end{tabular}",
        rf"\caption{{{caption}}}",
        r"\end{table}",
        "",
    ]


def csv_num(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return ""
    s = f"{100 * x:.4f}"
    return "0.0000" if s == "-0.0000" else s
