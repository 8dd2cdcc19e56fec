"""insightface's verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ... in the ``faces_emore``
folder), read without executing the pickle.

Format (insightface ``recognition/arcface_torch/eval/verification.py``, ``load_bin``): a pickle of
``(bins, issame_list)``; insightface loads it with ``pickle.load(f, encoding='bytes')``. ``bins`` holds the
encoded images (JPEG or PNG of 112x112 aligned faces), two per pair, pair ``i`` being images ``2i`` and
``2i + 1``; ``issame_list`` one bool per pair. In the released files each image is a ``bytes`` object or a ``uint8``
numpy array, ``cv2.imencode``'s (N, 1) buffer (``small_lfw.bin`` of insightface's ``arcface_paddle/test_tipc/data``
pickles ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``); ``issame_list`` is a list of
Python or numpy bools, or a bool array.

:class:`SafeUnpickler` resolves no global except numpy's array and scalar reconstructors, so a ``.bin`` file
cannot run code (and ``_codecs.encode`` of latin-1 text, which protocols 0-2 use for Python 3 ``bytes``); anything
else is a one-line ``DataFormatError`` naming the file.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass

import numpy as np

from harness.core.errors import DataFormatError, require_file

__all__ = ["SafeUnpickler", "VerificationBin", "read_bin", "bin_bytes", "write_bin"]

_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's array reconstructor (numpy.core / numpy._core .multiarray)
_SCALAR = np.bool_(True).__reduce__()[0]  # numpy's scalar reconstructor (a pickled numpy bool)


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` as pickle protocols 0-2 use it for ``bytes`` written by Python 3 (latin-1 only)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(
            f"_codecs.encode({type(text).__name__}, {encoding!r}) is not allowed in a verification .bin"
        )
    return text.encode("latin-1")


_ALLOWED = {
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class SafeUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` whose ``find_class`` returns only numpy's array / scalar / dtype reconstructors (and a
    latin-1-only ``_codecs.encode``) and refuses every other global (``os.system``, ``builtins.eval``, ...), so
    unpickling builds plain data and runs no code. Arrays of dtype ``object`` are refused after loading
    (:func:`read_bin` checks every leaf)."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a verification .bin") from None


@dataclass(frozen=True)
class VerificationBin:
    """One verification set: ``images`` (2 x pairs encoded images, pair i = images 2i and 2i+1), ``issame``
    (pairs,) bool, and the file it came from."""

    path: str
    images: tuple[bytes, ...]
    issame: np.ndarray

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.path))[0]

    def __len__(self) -> int:
        return len(self.issame)

    def decode(self, size: int | None = None, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Images ``start:stop`` decoded to uint8 (B, 3, H, W) RGB; with ``size``, a face of another side is resized
        to ``size`` x ``size`` (insightface resizes the short side to the model's input size)."""
        from harness.data.images import decode_image

        out = []
        for i in range(start, len(self.images) if stop is None else stop):
            rgb = decode_image(self.images[i], self.path, f"image {i}")
            if size is not None and (rgb.shape[0] != size or rgb.shape[1] != size):
                from PIL import Image

                rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR), dtype=np.uint8)
            if out and rgb.shape != out[0].shape:
                raise DataFormatError(
                    self.path,
                    f"image {i}",
                    f"is {rgb.shape[1]}x{rgb.shape[0]}, image {start} is {out[0].shape[1]}x{out[0].shape[0]}",
                )
            out.append(rgb)
        return np.stack(out).transpose(0, 3, 1, 2).copy() if out else np.zeros((0, 3, 0, 0), np.uint8)


def _image_bytes(path: str, i: int, x) -> bytes:
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    if isinstance(x, np.ndarray) and x.dtype == np.uint8 and (x.ndim == 1 or (x.ndim == 2 and x.shape[1] == 1)):
        return x.tobytes()  # cv2.imencode's (N, 1) buffer, as in insightface's own files
    raise DataFormatError(
        path,
        f"image {i}",
        f"is a {type(x).__name__}"
        f"{f' {x.dtype} {x.shape}' if isinstance(x, np.ndarray) else ''}, expected "
        "encoded image bytes (bytes, or a uint8 array of shape (N,) or (N, 1))",
    )


def _issame(path: str, raw) -> np.ndarray:
    if isinstance(raw, np.ndarray):
        if raw.dtype == object or raw.ndim != 1:
            raise DataFormatError(
                path, "issame_list", f"is a {raw.dtype} array of shape {raw.shape}, expected 1-D bools"
            )
        values = list(raw.tolist())
    elif isinstance(raw, (list, tuple)):
        values = list(raw)
    else:
        raise DataFormatError(path, "issame_list", f"is a {type(raw).__name__}, expected a list of bools")
    out = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if isinstance(v, (bool, np.bool_)) or (isinstance(v, (int, np.integer)) and v in (0, 1)):
            out[i] = bool(v)
        else:
            raise DataFormatError(path, f"issame_list[{i}]", f"is {v!r}, expected a bool")
    return out


def read_bin(path: str | os.PathLike) -> VerificationBin:
    """Read a verification ``.bin`` with :class:`SafeUnpickler` (``encoding='bytes'``, as insightface loads it);
    checks the structure: a 2-tuple, 2 images per pair, encoded images, bools."""
    path = os.fspath(path)
    require_file(path, "verification .bin")
    with open(path, "rb") as f:
        data = f.read()
    try:
        obj = SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataFormatError(path, None, f"not a verification .bin: {' '.join(str(exc).split())}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError, OverflowError) as exc:
        raise DataFormatError(
            path, None, f"not a readable pickle ({type(exc).__name__}: {' '.join(str(exc).split())})"
        ) from None
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise DataFormatError(path, None, f"holds a {type(obj).__name__}, expected the pair (bins, issame_list)")
    bins, raw_issame = obj
    if not isinstance(bins, (list, tuple)):
        raise DataFormatError(path, "bins", f"is a {type(bins).__name__}, expected a list of encoded images")
    issame = _issame(path, raw_issame)
    if len(issame) == 0:
        raise DataFormatError(path, "issame_list", "is empty (no pairs)")
    if len(bins) != 2 * len(issame):
        raise DataFormatError(path, "bins", f"holds {len(bins)} images for {len(issame)} pairs (expected 2 per pair)")
    return VerificationBin(path, tuple(_image_bytes(path, i, x) for i, x in enumerate(bins)), issame)


def bin_bytes(images, issame) -> bytes:
    """The pickle of ``(list of image bytes, list of bool)``, insightface's layout (protocol 4)."""
    images = [bytes(x) for x in images]
    issame = [bool(x) for x in issame]
    if len(images) != 2 * len(issame):
        raise ValueError(f"{len(images)} images for {len(issame)} pairs (expected 2 per pair)")
    return pickle.dumps((images, issame), protocol=4)


def write_bin(path: str | os.PathLike, images, issame) -> str:
    """Write a verification ``.bin`` atomically (:func:`harness.core.atomic.write_files_atomic`)."""
    from harness.core.atomic import write_files_atomic

    return write_files_atomic({os.fspath(path): bin_bytes(images, issame)})[0]
