"""The fast paths of the evaluators give exactly what the reference paths give.

- IJB meta files: the byte-level reader (layout checked with NumPy, numbers by pandas' C parser) and the pair file's
  SWAR reader against the line-by-line readers they fall back to, on clean files, on random decimal tokens, and on
  tricky inputs (CRLF, trailing spaces and blank lines, signs / decimals / exponents in integer columns, ``#`` and
  quotes in names, non-UTF-8 names).
- IJB 1:1: the pair file read in the background (``defer_pairs``), the probe-media split ROCs from one merge, the
  lookup-table check of pair template ids.
- ``chunked_topk``'s float32 path (a bf16 prefilter in torch blocks in threads, exact rescoring) against a dense sort
  of the exact scores and against the general path, exact ties both ways and clusters of near-copies, on blocks small
  enough to cross many block and merge boundaries; its error bound on every entry of a bf16 product; its fallback.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from harness.core.errors import DataFormatError
from harness.data.ijb import (
    _fast_records,
    _read_face_tid_mid_lines,
    _read_name_5pts_score_lines,
    _scan_template_pairs,
    check_pairs_known,
    read_face_tid_mid,
    read_ijb,
    read_ijb_deferred,
    read_name_5pts_score,
    read_template_pairs,
)
from harness.eval import identification as idn
from harness.eval.ijb_verification import IJBVerification, VerificationProtocol, _tar_block, _tar_blocks_split


def _write_bytes(path, data: bytes) -> str:
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def _same_floats(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape and a.flags.c_contiguous and b.flags.c_contiguous
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def _ftm_lines(rng, n):
    tids = np.sort(rng.integers(0, 200_000, n))
    return [f"{i + 1}.jpg {t} {m}" for i, (t, m) in enumerate(zip(tids, rng.integers(0, 10**6, n)))]


def _pts_lines(rng, n, tokens=None):
    out = []
    for i in range(n):
        nums = (
            tokens[i]
            if tokens is not None
            else [f"{x:.3f}" for x in rng.uniform(0, 150, 10)] + [f"{rng.uniform(0, 1):.6f}"]
        )
        out.append(f"img_{i}.jpg " + " ".join(nums))
    return out


def _check_ftm(path):
    fast, ref = read_face_tid_mid(path), _read_face_tid_mid_lines(path)
    assert fast[0] == ref[0]
    for a, b in zip(fast[1:], ref[1:]):
        assert a.dtype == b.dtype == np.int64
        np.testing.assert_array_equal(a, b)


def _check_pts(path):
    fast, ref = read_name_5pts_score(path), _read_name_5pts_score_lines(path)
    assert fast[0] == ref[0]
    _same_floats(fast[1], ref[1])
    _same_floats(fast[2], ref[2])


def test_fast_meta_readers_equal_line_readers_on_clean_files(tmp_path):
    rng = np.random.default_rng(0)
    ftm = _write_bytes(tmp_path / "ftm.txt", ("\n".join(_ftm_lines(rng, 3000)) + "\n").encode())
    pts = _write_bytes(tmp_path / "pts.txt", ("\n".join(_pts_lines(rng, 3000)) + "\n").encode())
    with open(ftm, "rb") as f:  # the fast path runs on these (not the fallback)
        assert _fast_records(f.read(), 3, b"0123456789", np.dtype(np.int64)) is not None
    with open(pts, "rb") as f:
        assert _fast_records(f.read(), 12, None, np.dtype(np.float64)) is not None
    _check_ftm(ftm)
    _check_pts(pts)


def test_fast_decimal_parse_is_bitwise_the_line_readers_on_random_tokens(tmp_path):
    """Correct rounding: random decimals with up to 20 significant digits, exponents, signs, leading zeros, '.5',
    '5.'."""
    rng = np.random.default_rng(1)
    forms = []
    for _ in range(4000):
        digits = "".join(rng.choice(list("0123456789"), rng.integers(1, 21)))
        kind = rng.integers(0, 7)
        if kind == 0:
            tok = digits
        elif kind == 1:
            cut = rng.integers(0, len(digits) + 1)
            tok = digits[:cut] + "." + digits[cut:] if cut or len(digits) else digits
        elif kind == 2:
            tok = "." + digits
        elif kind == 3:
            tok = digits + "."
        elif kind == 4:
            tok = f"{digits[:1]}.{digits[1:] or '0'}e{rng.choice(['', '+', '-'])}{rng.integers(0, 36)}"
        elif kind == 5:
            tok = rng.choice(["+", "-"]) + digits[:8] + "." + digits[8:]
        else:
            tok = repr(float(rng.standard_normal() * 10.0 ** rng.integers(-8, 8)))
        forms.append(tok)
    forms = [t for t in forms if t not in (".", "+.", "-.")]
    n = len(forms) // 11
    tokens = [forms[i * 11 : (i + 1) * 11] for i in range(n)]
    path = _write_bytes(tmp_path / "pts.txt", ("\n".join(_pts_lines(rng, n, tokens)) + "\n").encode())
    _check_pts(path)
    want = np.array([[float(t) for t in row] for row in tokens])  # Python's float(): correctly rounded
    names, lmk, face = read_name_5pts_score(path)
    _same_floats(lmk, want[:, :10].astype(np.float32).reshape(n, 5, 2))
    _same_floats(face, want[:, 10].astype(np.float32))


@pytest.mark.parametrize(
    "lines, end",
    [
        (["1.jpg 1 5", "2.jpg 1 6", "3.jpg 2 7"], "\r\n"),  # CRLF: the fallback, same numbers
        (["1.jpg 1 5", "2.jpg 1 6", "3.jpg 2 7", "", "  "], "\n"),  # trailing blank / whitespace lines dropped
        (["1.jpg +1 5", "2.jpg 1 +6"], "\n"),  # a plus sign is an integer for the line reader
        (["a#b.jpg 1 5", '"q.jpg 2 6', "c'd.jpg 3 7"], "\n"),  # no comment or quote character in this format
        (["1.jpg 007 0005"], ""),  # leading zeros, no final LF
    ],
)
def test_fast_face_tid_mid_tricky_inputs_as_line_reader(tmp_path, lines, end):
    path = _write_bytes(tmp_path / "ftm.txt", (end.join(lines) + end).encode())
    _check_ftm(path)


@pytest.mark.parametrize("bad", ["5.0", "1e3", "-5", " 5", "5 ", "0x10", "99999999999999999999", "5a"])
def test_integer_columns_refuse_what_the_line_reader_refuses(tmp_path, bad):
    """pandas alone would read 5.0 / 1e3 as integers; the fast path leaves every such line to the line reader."""
    path = _write_bytes(tmp_path / "ftm.txt", f"1.jpg 1 5\n2.jpg 1 {bad}\n".encode())
    with pytest.raises(DataFormatError) as exc:
        read_face_tid_mid(path)
    with pytest.raises(DataFormatError) as ref:
        _read_face_tid_mid_lines(path)
    assert str(exc.value) == str(ref.value) and ":line 2:" in str(exc.value)


@pytest.mark.parametrize("bad", ["inf", "nan", "1e999", "1.2.3", "1e", "-", "1_0", "0x1p3", "", "1,5"])
def test_decimal_columns_refuse_what_the_line_reader_refuses(tmp_path, bad):
    lines = _pts_lines(np.random.default_rng(2), 3)
    fields = lines[1].split(" ")
    fields[4] = bad
    lines[1] = " ".join(fields)
    path = _write_bytes(tmp_path / "pts.txt", ("\n".join(lines) + "\n").encode())
    with pytest.raises(DataFormatError) as exc:
        read_name_5pts_score(path)
    with pytest.raises(DataFormatError) as ref:
        _read_name_5pts_score_lines(path)
    assert str(exc.value) == str(ref.value) and ":line 2:" in str(exc.value)


def test_fast_readers_crlf_trailing_space_and_non_utf8_names(tmp_path):
    rng = np.random.default_rng(3)
    lines = _pts_lines(rng, 50)
    _check_pts(_write_bytes(tmp_path / "crlf.txt", ("\r\n".join(lines) + "\r\n").encode()))
    raw = b"\n".join(line.encode() for line in lines).replace(b"img_7.jpg", b"img_\xff7.jpg") + b"\n"
    _check_pts(_write_bytes(tmp_path / "latin.txt", raw))
    names = read_name_5pts_score(str(tmp_path / "latin.txt"))[0]
    assert names[7] == "img_\udcff7.jpg"  # surrogateescape, as the line reader
    spaced = lines[:]
    spaced[3] += " "
    path = _write_bytes(tmp_path / "sp.txt", ("\n".join(spaced) + "\n").encode())
    with pytest.raises(DataFormatError, match=r":line 4: expected 12 space-separated fields"):
        read_name_5pts_score(path)


def test_pair_reader_fast_equals_scan(tmp_path):
    rng = np.random.default_rng(4)
    p = rng.integers(0, 10**6, (5000, 2))
    lab = rng.integers(0, 2, 5000)
    text = "\n".join(f"{a} {b} {c}" for (a, b), c in zip(p, lab))
    for end in ("\n", "\r\n"):
        data = (text.replace("\n", end) + end).encode()
        path = _write_bytes(tmp_path / f"pairs{len(end)}.txt", data)
        fast = read_template_pairs(path)
        ref = _scan_template_pairs(data, path)
        np.testing.assert_array_equal(fast[0], ref[0])
        np.testing.assert_array_equal(fast[1], ref[1])
        assert fast[0].dtype == np.int64 and fast[1].dtype == np.int8


@pytest.mark.parametrize("chunk", [1 << 22, 64, 36])
def test_swar_pair_parser_equals_scan(tmp_path, monkeypatch, chunk):
    """The SWAR reader (ids of 1-16 digits) against the line scan: every length 1-16, leading zeros, 99999999 and the
    largest 16-digit id, chunks that end anywhere (36 bytes, the longest line: about one line per chunk), with and
    without the last LF."""
    from harness.data import ijb

    monkeypatch.setattr(ijb, "_SWAR_CHUNK", chunk)
    rng = np.random.default_rng(5)
    n = 3000
    digits = rng.integers(1, 17, (n, 2))
    ids = rng.integers(0, 10**16, (n, 2)) % (10**digits)
    tokens = [[str(v).zfill(int(d)) for v, d in zip(row, drow)] for row, drow in zip(ids, digits)]
    tokens[0] = ["99999999", "0"]
    tokens[1] = ["00000007", "12345678"]
    tokens[2] = ["9999999999999999", "0000000000000001"]
    tokens[3] = ["100000000", "1234567890123456"]
    lab = rng.integers(0, 2, n)
    text = "\n".join(f"{a} {b} {c}" for (a, b), c in zip(tokens, lab))
    for end in ("\n", ""):
        data = (text + end).encode()
        path = _write_bytes(tmp_path / f"pairs{len(end)}.txt", data)
        fast = ijb._swar_pairs(data)
        assert fast is not None
        ref = _scan_template_pairs(data, path)
        for a, b in zip(fast, ref):
            np.testing.assert_array_equal(a, b)
        assert fast[0].dtype == np.int64 and fast[1].dtype == np.int8
        got = read_template_pairs(path)
        np.testing.assert_array_equal(got[0], ref[0])


@pytest.mark.parametrize(
    "text",
    [
        "1 2 0\n12345678901234567 2 1\n",  # a 17-digit id
        "1 2 0\n1 2 1\n\n",  # a blank last line: the scan
        "1 2 0\r\n1 2 1\r\n",  # CRLF
        "1  2 0\n",  # two spaces
        "1\t2 0\n",  # a tab
        "1 2 0 \n",  # a trailing space
        "1 2 2\n",  # label 2
        "1 2 01\n",  # a 2-byte label
        "1 2\n3 4 0 1\n",  # 2 and 4 fields: 6 separators in all
        "+1 2 0\n",
        "1 2 0\n\n3 4 1\n",  # a blank line inside
    ],
)
def test_swar_pair_parser_leaves_anything_else_to_the_other_readers(tmp_path, text):
    from harness.data import ijb

    data = text.encode()
    assert ijb._swar_pairs(data) is None
    path = _write_bytes(tmp_path / "p.txt", data)
    try:
        ref = _scan_template_pairs(data, path)
    except DataFormatError as e:
        with pytest.raises(DataFormatError) as got:
            read_template_pairs(path)
        assert str(got.value) == str(e)
    else:
        got = read_template_pairs(path)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])


def test_check_pairs_known_table_and_isin_paths_agree():
    templates = np.array([3, 3, 5, 9, 1 << 26])
    check_pairs_known(np.array([[3, 5], [9, 3]]), templates, "p.txt")  # table path
    check_pairs_known(np.array([[3, 1 << 26]]), templates, "p.txt")  # ids beyond the table: np.isin
    for pairs in (np.array([[3, 5], [9, 4]]), np.array([[3, 5], [9, 4], [1 << 26, 7]])):
        with pytest.raises(DataFormatError, match=r"^p.txt:line 2: tid2 4 is not a template"):
            check_pairs_known(pairs, templates, "p.txt")


# ------------------------------------------------------------------------------------------ IJB 1:1 verification


def _release(tmp_path, n_rows=400, n_t=40, n_pairs=3000, seed=5, pair_text=None):
    rng = np.random.default_rng(seed)
    root = tmp_path / "IJB_release" / "IJBC"
    tids = np.sort(rng.integers(1, n_t + 1, n_rows))
    tids[:n_t] = np.arange(1, n_t + 1)
    tids.sort()
    mids = rng.integers(0, n_rows // 2, n_rows)
    names = [f"{i + 1}.jpg" for i in range(n_rows)]
    _write_bytes(
        root / "meta" / "ijbc_face_tid_mid.txt",
        ("\n".join(f"{a} {t} {m}" for a, t, m in zip(names, tids, mids)) + "\n").encode(),
    )
    _write_bytes(
        root / "meta" / "ijbc_name_5pts_score.txt",
        (
            "\n".join(
                f"{a} " + " ".join(f"{x:.2f}" for x in rng.uniform(0, 100, 10)) + f" {rng.uniform(0.1, 1):.4f}"
                for a in names
            )
            + "\n"
        ).encode(),
    )
    pairs = rng.integers(1, n_t + 1, (n_pairs, 2))
    labels = (rng.random(n_pairs) < 0.2).astype(int)
    if pair_text is None:
        pair_text = "\n".join(f"{a} {b} {c}" for (a, b), c in zip(pairs, labels)) + "\n"
    _write_bytes(root / "meta" / "ijbc_template_pair_label.txt", pair_text.encode())
    os.makedirs(root / "loose_crop", exist_ok=True)
    feats = rng.standard_normal((n_rows, 16)).astype(np.float32)
    return str(root), feats


def test_deferred_pairs_give_the_same_result_and_the_same_errors(tmp_path):
    root, feats = _release(tmp_path)
    eager = IJBVerification(root)
    deferred = IJBVerification(root, defer_pairs=True)
    assert deferred.evaluate_features(feats) == eager.evaluate_features(feats)
    np.testing.assert_array_equal(deferred.meta.pairs, eager.meta.pairs)
    np.testing.assert_array_equal(IJBVerification(root, defer_pairs=True).meta.labels, read_ijb(root).labels)
    meta, job = read_ijb_deferred(root)
    assert meta.pairs.shape == (0, 2) and job.result()[0].shape == (3000, 2)
    bad_root, feats = _release(tmp_path / "bad", pair_text="1 2 0\n1 2 7\n")
    ev = IJBVerification(bad_root, defer_pairs=True)  # constructed; the pair file's error comes with its use
    with pytest.raises(DataFormatError, match=r"ijbc_template_pair_label.txt:line 2: label 7"):
        ev.evaluate_features(feats)
    unknown_root, feats = _release(tmp_path / "unk", pair_text="1 2 0\n1 999 1\n")
    with pytest.raises(DataFormatError, match=r"ijbc_template_pair_label.txt:line 2: tid2 999"):
        IJBVerification(unknown_root, defer_pairs=True).evaluate_features(feats)


@pytest.mark.parametrize("frac_video", [0.0, 0.3, 1.0])
def test_split_rocs_from_one_merge_equal_three_roc_curves(frac_video):
    rng = np.random.default_rng(6)
    n = 20_000
    scores = np.round(rng.standard_normal(n), 2)  # many exact ties
    scores[:50] = -0.0
    scores[50:100] = 0.0
    labels = (rng.random(n) < 0.1).astype(np.int8)
    split = rng.random(n) < frac_video
    fars = VerificationProtocol().fars
    main, stills, video = _tar_blocks_split(scores, labels, split, fars)
    assert main == _tar_block(scores, labels, fars)
    assert stills == _tar_block(scores[~split], labels[~split], fars)
    assert video == _tar_block(scores[split], labels[split], fars)


# ------------------------------------------------------------------------------------------ identification top-k


def _dense_topk(probe, gallery, k, ties):
    s = probe @ gallery.T
    order = (
        np.argsort(-s, axis=1, kind="stable")
        if ties == "low_index_first"
        else np.argsort(s, axis=1, kind="stable")[:, ::-1]
    )
    return np.take_along_axis(s, order[:, :k], axis=1), order[:, :k]


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(idn, "_PROBE_BLOCK", 7)
    monkeypatch.setattr(idn, "_GALLERY_BLOCK", 13)
    monkeypatch.setattr(idn, "_MERGE_EVERY", 3)


@pytest.mark.parametrize("ties", ["low_index_first", "high_index_first"])
def test_float32_topk_path_orders_exact_ties_as_documented(small_blocks, ties):
    """Distinct integer rows (exact products, ties everywhere, many straddling k); blocks of 7 x 13, merges every 3."""
    rng = np.random.default_rng(7)
    gallery = np.unique(rng.integers(-2, 3, (900, 6)), axis=0).astype(np.float32)
    gallery = gallery[rng.permutation(gallery.shape[0])]
    probe = rng.integers(-2, 3, (45, 6)).astype(np.float32)
    assert np.unique(gallery, axis=0).shape[0] == gallery.shape[0] > 500  # no duplicate rows
    for k in (1, 5, 20, 40):
        want_s, want_i = _dense_topk(probe, gallery, k, ties)
        for max_bytes in (4 * 7 * 13 * 2, 1 << 30):
            got_s, got_i = idn._topk_float32(probe, gallery, k, 1 if ties == "low_index_first" else -1, 3, max_bytes)
            np.testing.assert_array_equal(got_i, want_i, err_msg=f"k={k} {max_bytes}")
            np.testing.assert_array_equal(got_s, want_s)


def test_float32_topk_path_equals_general_path(small_blocks, monkeypatch):
    """Integer features up to 1000 in 4 dimensions: every product is exact in float32 whatever the kernel, rows distinct
    (the float32 path runs), ties present; same scores and order as the general path and the dense sort."""
    rng = np.random.default_rng(8)
    probe = rng.integers(-1000, 1001, (50, 4)).astype(np.float32)
    gallery = rng.integers(-1000, 1001, (700, 4)).astype(np.float32)
    gallery[600:] = gallery[:100] * -1  # opposite rows: exact ties of |score| pairs
    gallery[600:, 1] += 1
    assert not idn._may_have_duplicates(gallery)
    for ties in ("low_index_first", "high_index_first"):
        fast = idn.chunked_topk(probe, gallery, 20, ties=ties)
        with monkeypatch.context() as m:
            m.setattr(idn, "_may_have_duplicates", lambda x: True)  # the general (unique_rows) path
            general = idn.chunked_topk(probe, gallery, 20, ties=ties)
        np.testing.assert_array_equal(fast[1], general[1])
        np.testing.assert_array_equal(fast[0], general[0])
        np.testing.assert_array_equal(fast[1], _dense_topk(probe, gallery, 20, ties)[1])


def _exact_topk(probe, gallery, k, ties):
    """The definition: float32 nearest the exact inner product (float64 products), then the documented tie order."""
    s = (probe.astype(np.float64) @ gallery.astype(np.float64).T).astype(np.float32)
    order = (
        np.argsort(-s, axis=1, kind="stable")
        if ties == "low_index_first"
        else np.argsort(s, axis=1, kind="stable")[:, ::-1]
    )
    return np.take_along_axis(s, order[:, :k], axis=1), order[:, :k]


def _near_copies(rng, clusters=40, copies=15, dim=24, eps=1e-4):
    """Gallery rows in clusters of near-copies (bf16 cannot tell them apart: the exact rescoring decides), of mixed
    norms, shuffled; no two rows equal."""
    base = rng.standard_normal((clusters, dim))
    g = np.repeat(base, copies, axis=0) + eps * rng.standard_normal((clusters * copies, dim))
    g *= rng.uniform(0.5, 3.0, (g.shape[0], 1))
    return g[rng.permutation(g.shape[0])].astype(np.float32)


@pytest.mark.parametrize("ties", ["low_index_first", "high_index_first"])
def test_bf16_prefilter_equals_the_exact_search(small_blocks, monkeypatch, ties):
    rng = np.random.default_rng(9)
    gallery = _near_copies(rng)
    probe = rng.standard_normal((30, 24)).astype(np.float32)
    assert not idn._may_have_duplicates(gallery)
    for k in (1, 7, 20):
        want = _exact_topk(probe, gallery, k, ties)
        fast = idn.chunked_topk(probe, gallery, k, ties=ties)
        with monkeypatch.context() as m:
            m.setattr(idn, "_may_have_duplicates", lambda x: True)  # the general (float64 product) path
            general = idn.chunked_topk(probe, gallery, k, ties=ties)
        for got in (fast, general):
            np.testing.assert_array_equal(got[1], want[1], err_msg=f"k={k}")
            np.testing.assert_array_equal(got[0], want[0])
    # the mate score of a pair is its top-k score
    np.testing.assert_array_equal(idn.gather_scores(probe, gallery, fast[1][:, 0]), fast[0][:, 0])


def test_bf16_error_bound_holds_on_every_entry():
    """The bound of :func:`_bf16_bounds` against the exact products, on every entry of a 200 x 3,000 x 512 bf16
    product (this CPU's bf16 GEMM, unnormalised rows), and not vacuous (within 50x of the worst error seen)."""
    import torch

    rng = np.random.default_rng(10)
    probe = (rng.standard_normal((200, 512)) * rng.uniform(0.1, 10, (200, 1))).astype(np.float32)
    gallery = (rng.standard_normal((3000, 512)) * rng.uniform(0.1, 10, (3000, 1))).astype(np.float32)
    p16, g16 = torch.from_numpy(probe).to(torch.bfloat16), torch.from_numpy(gallery).to(torch.bfloat16)
    r, v = idn._bf16_bounds(probe, gallery, p16, g16)
    s = torch.mm(p16, g16.T).to(torch.float32).numpy().astype(np.float64)
    x = probe.astype(np.float64) @ gallery.astype(np.float64).T
    err, bound = np.abs(x - s), r[:, None] + v * np.abs(s)
    assert (err <= bound).all()
    assert bound.max() < 50 * err.max()


def test_bf16_prefilter_redoes_a_block_when_its_error_model_fails(small_blocks, monkeypatch):
    """A bound of zero (an error model every candidate breaks): each probe block is redone by float64 products."""
    rng = np.random.default_rng(11)
    gallery = _near_copies(rng)
    probe = rng.standard_normal((30, 24)).astype(np.float32)
    monkeypatch.setattr(idn, "_bf16_bounds", lambda *a: (np.zeros(a[0].shape[0]), 0.0))
    redone = []
    general = idn._topk_general
    monkeypatch.setattr(idn, "_topk_general", lambda p, *a: redone.append(p.shape[0]) or general(p, *a))
    got = idn.chunked_topk(probe, gallery, 20)
    assert sum(redone) == probe.shape[0]
    want = _exact_topk(probe, gallery, 20, "low_index_first")
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])


def test_duplicate_check_is_conservative():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((100, 8)).astype(np.float32)
    assert not idn._may_have_duplicates(x)
    y = x.copy()
    y[60] = y[3]
    assert idn._may_have_duplicates(y)
    z = x.copy()
    z[3, [0, 4]] = 0.0
    z[70] = z[3]
    z[70, [0, 4]] = -0.0  # -0.0 and 0.0 are one value
    assert idn._may_have_duplicates(z)
    w = x.copy()
    w[80, [0, 4]] = w[5, [0, 4]]  # equal on the two key columns only: conservative True, unique_rows decides
    assert idn._may_have_duplicates(w)
    s_w, i_w = idn.chunked_topk(x[:10], w, 5)
    np.testing.assert_array_equal(i_w, _dense_topk(x[:10], w, 5, "low_index_first")[1])
    empty_s, empty_i = idn.chunked_topk(x[:0], x, 5)
    assert empty_s.shape == (0, 5) and empty_i.shape == (0, 5)
