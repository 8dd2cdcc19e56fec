"""Line splitting shared by the text-format readers (IJB meta files, crop lists, WIDER annotations)."""

from __future__ import annotations


def split_lines(text: str) -> list[str]:
    """Lines without terminators (LF or CRLF); trailing blank lines dropped, inner ones kept (so readers can
    report them with their line numbers)."""
    if "\r\n" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def read_lines(path: str) -> list[str]:
    """``split_lines`` of a UTF-8 file; undecodable bytes survive (surrogateescape) for the reader to report."""
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        return split_lines(f.read())
