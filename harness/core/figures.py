"""The figure helpers every matplotlib figure of the project shares (``harness.plots``, ``harness.norm_quality``):
one colour and dash per series, the same in every figure, and a figure's PNG bytes, drawn with the Agg canvas (no
display needed) and without the ``Software`` metadata entry, so the same figure gives the same bytes on every
matplotlib version. The bytes are written by :mod:`harness.core.atomic`."""

from __future__ import annotations

import io
from collections.abc import Iterable

#: dots per inch of every PNG (6.4 x 4.8 in figures: 640 x 480 pixels)
DPI = 100


def series_styles(names: Iterable[str]) -> dict[str, dict]:
    """One colour (and, past 10 series, dash) per name, in sorted-name order, the same in every figure."""
    import matplotlib

    colours = matplotlib.colormaps["tab10"].colors
    dashes = ["-", "--", ":", "-."]
    return {m: {"color": colours[i % 10], "linestyle": dashes[(i // 10) % 4]} for i, m in enumerate(sorted(names))}


def png_bytes(fig, dpi: int = DPI) -> bytes:
    """The PNG of a :class:`matplotlib.figure.Figure` (Agg canvas, in memory)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()
