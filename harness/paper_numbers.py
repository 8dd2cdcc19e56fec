"""``python -m harness.paper_numbers [DIR_OR_CSV ...]``: validate the published-numbers CSV files (default
``results/paper/``) and print one line per file. The loader is :mod:`harness.report.paper_numbers`."""

from __future__ import annotations

import os
import sys

from harness.core.errors import DataFormatError
from harness.report.paper_numbers import DEFAULT_DIR, PaperNumber, load_paper_numbers  # results/paper/README.md shows

# harness.paper_numbers.load_paper_numbers(): it stays importable here


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        numbers = load_paper_numbers(argv or DEFAULT_DIR)
    except (DataFormatError, FileNotFoundError) as exc:
        print(f"harness.paper_numbers: {exc}", file=sys.stderr)
        return 2
    by_file: dict[str, list[PaperNumber]] = {}
    for n in numbers:
        by_file.setdefault(n.file, []).append(n)
    for f, ns in by_file.items():
        methods = sorted({f"{n.method} {n.backbone} {n.train_set}" for n in ns})
        print(f"{os.path.relpath(f)}: {len(ns)} numbers, {len(methods)} models ({'; '.join(methods)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
