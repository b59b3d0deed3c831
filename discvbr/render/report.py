"""A self-contained HTML report of an analysis: figures (embedded PNG), tables and provenance.

One file, no external resources: figures are base64 ``data:`` URIs, styles are inline, so a
report can be mailed or archived with the results it describes.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
from importlib import metadata
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from discvbr import __version__
from discvbr.errors import DiscVBRError
from discvbr.io import atomic_write

__all__ = ["ReportSection", "figure_png", "write_report", "software_versions"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; } th { background: #f3f3f3; }
.provenance td, .provenance th { text-align: left; }
"""


@dataclass
class ReportSection:
    """One section of a report.

    Attributes
    ----------
    title : str
    text : str
        Paragraphs (blank-line separated), shown as plain text.
    figures : sequence
        matplotlib Figures, PNG files, PNG bytes or RGB uint8 arrays (H, W, 3).
    captions : sequence of str
        One per figure (optional).
    tables : sequence of pandas.DataFrame
    table_captions : sequence of str
    """

    title: str
    text: str = ""
    figures: Sequence[object] = field(default_factory=list)
    captions: Sequence[str] = field(default_factory=list)
    tables: Sequence[object] = field(default_factory=list)
    table_captions: Sequence[str] = field(default_factory=list)


def figure_png(figure: object, *, dpi: int = 120) -> bytes:
    """PNG bytes of a matplotlib Figure, a PNG file, PNG bytes or an RGB(A) uint8 array."""
    if isinstance(figure, (bytes, bytearray)):
        data = bytes(figure)
    elif isinstance(figure, (str, os.PathLike)):
        path = Path(figure)
        if not path.is_file():
            raise DiscVBRError(f"report figure file not found: {path}")
        data = path.read_bytes()
    elif isinstance(figure, np.ndarray):
        from matplotlib.image import imsave

        buffer = io.BytesIO()
        imsave(buffer, np.asarray(figure, dtype=np.uint8), format="png")
        data = buffer.getvalue()
    elif hasattr(figure, "savefig"):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi)
        data = buffer.getvalue()
    else:
        raise DiscVBRError(f"cannot put a {type(figure).__name__} in a report: give a Figure, PNG file, PNG bytes or RGB array")
    if not data.startswith(_PNG_SIGNATURE):
        raise DiscVBRError("report figures must be PNG images")
    return data


def software_versions() -> dict[str, str]:
    """Versions of DiscVBR and of the libraries that made the figures."""
    versions = {"discvbr": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for name in ("scipy", "pandas", "matplotlib"):
        versions[name] = __import__(name).__version__
    try:
        versions["vtk"] = metadata.version("vtk")
    except metadata.PackageNotFoundError:
        versions["vtk"] = "not installed"
    return versions


def _paragraphs(text: str) -> str:
    return "".join(f"<p>{html.escape(p.strip())}</p>" for p in text.split("\n\n") if p.strip())


def write_report(
    path: str | os.PathLike,
    *,
    title: str,
    sections: Sequence[ReportSection],
    parameters: dict | None = None,
    float_format: str = "{:.4g}",
) -> Path:
    """Write a self-contained HTML report, atomically.

    Parameters
    ----------
    path : path-like
        Target ``.html`` file.
    title : str
        Report title.
    sections : sequence of ReportSection
    parameters : dict, optional
        Analysis parameters, listed with the software versions and the date (provenance).
    float_format : str
        Format of floating-point table cells.

    Returns
    -------
    Path
    """
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise DiscVBRError(f"{path}: the report is written as .html")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.title)}</h2>{_paragraphs(section.text)}")
        for i, figure in enumerate(section.figures):
            encoded = base64.b64encode(figure_png(figure)).decode("ascii")
            caption = section.captions[i] if i < len(section.captions) else ""
            alt = html.escape(caption or f"{section.title} figure {i + 1}", quote=True)
            parts.append(f'<figure><img src="data:image/png;base64,{encoded}" alt="{alt}">')
            if caption:
                parts.append(f"<figcaption>{html.escape(caption)}</figcaption>")
            parts.append("</figure>")
        for i, table in enumerate(section.tables):
            caption = section.table_captions[i] if i < len(section.table_captions) else ""
            if caption:
                parts.append(f"<p><b>{html.escape(caption)}</b></p>")
            parts.append(table.to_html(float_format=float_format.format, na_rep="", border=0))
        parts.append("</section>")
    provenance = {**software_versions(), "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    rows = [(k, v) for k, v in provenance.items()] + [(f"parameter: {k}", v) for k, v in (parameters or {}).items()]
    parts.append('<section><h2>Provenance</h2><table class="provenance">')
    parts.extend(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    parts.append("</table></section></body></html>")
    with atomic_write(path) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return path
