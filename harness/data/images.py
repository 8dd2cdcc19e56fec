"""Image decoding with errors that name the file (and record) an undecodable image came from."""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from harness.core.errors import DataFormatError


def decode_image(data: bytes, path: str | os.PathLike, where: str | None = None) -> np.ndarray:
    """Decode encoded image bytes (JPEG/PNG) to an RGB uint8 array of shape (H, W, 3).

    ``path``/``where`` only serve the error message: an undecodable payload raises
    ``DataFormatError(path, where, ...)``. PIL returns RGB; note that insightface's RecordIO JPEGs were encoded
    from BGR by cv2, which still stores true colours, so PIL's RGB is the right channel order for them.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataFormatError(
            path, where, f"undecodable image ({type(exc).__name__}: {exc})".replace("\n", " ")
        ) from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file to RGB uint8 (H, W, 3); a missing or undecodable file raises a one-line error."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image file not found") from None
    return decode_image(data, path)


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    """Encode an RGB uint8 (H, W, 3) array as baseline JPEG (4:2:0, no optimisation: byte-stable for a pinned
    Pillow)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"encode_jpeg expects uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="JPEG", quality=int(quality), subsampling=2, optimize=False)
    return buf.getvalue()


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """The memory format an image batch (B, C, H, W) is laid out in: ``channels_last`` when it is stored so (and
    not also plain contiguous, as a 1x1 image or a batch of one can be), else ``contiguous_format``. Transforms
    give their output their input's layout with it (the trainer feeds channels_last batches:
    ``model.channels_last``)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
