"""Citations a reader can follow: no text file of the repository names a path outside it.

Scanned: every file git knows in the repository (tracked, or untracked and not ignored; without git, a walk that
skips hidden folders and ``datasets/``) ending in .py, .md, .yaml, .yml, .toml, .txt or .cfg. A violation is

- a mention of the private reference notes (``shared/`` + ``reference``), which no one who clones the repository has;
- an absolute path under a machine's top-level folders (work, home, tmp, mnt, ...), except the documented placeholder
  data root ``/data/...`` (``profiles/paper/params.yaml``: ``root: /data/cfsm``; examples and tests use it too);
- a relative path with ``..`` to a document (.md, .rst, .txt, .pdf, .py, .toml, .yaml, .cfg, .ipynb) that lands
  outside the repository from the citing file's folder and from the repository root.

And a citation of ``docs/<file>.md`` names a file that exists, and its ``section N`` a heading that exists there.
The scanner itself is tested on examples, so that a pattern that stopped matching fails here too.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg")
#: The documented placeholder data root (``profiles/paper/params.yaml``); examples and tests use it as such.
ALLOWED_ABSOLUTE = ("/data/",)

PRIVATE_NOTES = re.compile("shared" + r"/+reference")
MACHINE_ROOTS = (
    "work",
    "home",
    "tmp",
    "root",
    "mnt",
    "data",
    "Users",
    "scratch",
    "scratch1",
    "opt",
    "srv",
    "var",
    "media",
    "nfs",
    "gpfs",
    "lustre",
)
# an absolute path: not preceded by a character that makes it part of a URL, a relative path or a word
ABSOLUTE = re.compile(r"(?<![\w.:/~@\-])/(?:" + "|".join(MACHINE_ROOTS) + r")/[\w.\-/]*")
RELATIVE_DOC = re.compile(r"(?<![\w/.])((?:\.\./)+[\w.\-/]*\.(?:md|rst|txt|pdf|py|toml|ya?ml|cfg|ipynb))\b")
DOCS_CITATION = re.compile(r"\bdocs/([\w.\-]+\.md)(?:`{0,2}[,;]?\s+sections?\s+(\d+(?:\.\d+)?))?")


def text_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        names = sorted(set(out))
    except (OSError, subprocess.CalledProcessError):
        names = []
        for root, dirs, files in os.walk(REPO):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("datasets", "__pycache__")]
            names += [os.path.relpath(os.path.join(root, f), REPO) for f in files]
    return [REPO / n for n in names if n.endswith(TEXT_SUFFIXES) and (REPO / n).is_file()]


def _outside(target: Path) -> bool:
    try:
        target.resolve().relative_to(REPO)
        return False
    except ValueError:
        return True


def leaving_paths(text: str, where: Path) -> list[str]:
    """The paths in ``text`` (of the file ``where``) that leave the repository."""
    found = [m.group(0) for m in PRIVATE_NOTES.finditer(text)]
    found += [m.group(0) for m in ABSOLUTE.finditer(text) if not m.group(0).startswith(ALLOWED_ABSOLUTE)]
    for m in RELATIVE_DOC.finditer(text):
        rel = m.group(1)
        if _outside(where.parent / rel) and _outside(REPO / rel):
            found.append(rel)
    return found


def test_the_scanner_finds_what_it_must_and_only_that():
    here = REPO / "harness" / "x.py"
    notes = "shared" + "/reference/benchmark_formats.md"
    work, home, tmp, up = "/" + "work", "/" + "home", "/" + "tmp", ".." + "/"
    bad = [
        f"see ``{notes}`` section 2",
        f"(see {up}{notes})",
        f"``{work}/{notes}``",
        f"notes in {home}/me/facts.md",
        f"the list {tmp}/run/a.txt",
        f"`{up}{up}outside/notes.md`",
    ]
    for line in bad:
        assert leaving_paths(line, here), line
    good = [
        "https://github.com/liufeng2915/CFSM/blob/main/CFSM/train.py",
        "root: /data/cfsm",
        "wdir: ../..",
        "``docs/benchmark_formats.md`` section 3",
        "a crop named ../outside.jpg is refused",
        "dvc.org/doc/command-reference/plots/templates",
        "see ../README.md",
        "ln -s ../root_src/faces root/x",
    ]
    assert leaving_paths("\n".join(good), REPO / "docs" / "x.md") == []


def test_no_text_file_names_a_path_outside_the_repository():
    files = text_files()
    assert any(f.name == "train.py" for f in files) and any(f.suffix == ".md" for f in files)
    bad = []
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), start=1):
            bad += [f"{f.relative_to(REPO)}:{n}: {p}" for p in leaving_paths(line, f)]
    assert bad == [], "paths outside the repository (cite the paper or the upstream file, or docs/):\n" + "\n".join(bad)


def _headings(doc: Path) -> set[str]:
    out = set()
    for line in doc.read_text(encoding="utf-8").splitlines():
        m = re.match(r"#+\s+(\d+(?:\.\d+)*)\.?\s", line)
        if m:
            out.add(m.group(1))
    return out


def test_docs_citations_name_files_and_sections_that_exist():
    cited = 0
    bad = []
    for f in text_files():
        text = f.read_text(encoding="utf-8", errors="replace").replace("\n", " ")
        for m in DOCS_CITATION.finditer(re.sub(r"\s+", " ", text)):
            cited += 1
            doc = REPO / "docs" / m.group(1)
            if not doc.is_file():
                bad.append(f"{f.relative_to(REPO)}: docs/{m.group(1)} does not exist")
            elif m.group(2) and m.group(2) not in _headings(doc):
                bad.append(f"{f.relative_to(REPO)}: docs/{m.group(1)} has no section {m.group(2)}")
    assert cited >= 10  # the reference notes' citations now point here
    assert bad == [], "\n".join(bad)


@pytest.mark.parametrize("doc", sorted((REPO / "docs").glob("*.md")), ids=lambda p: p.name)
def test_every_doc_names_its_upstream_sources_or_its_measurements(doc):
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# ") and ("github.com/" in text or "measured" in text)
