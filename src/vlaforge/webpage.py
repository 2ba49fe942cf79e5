"""Self-contained HTML pages in the reports' style (images embedded), for every layer's reports."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from vlaforge.files import atomic_write_text


def page(title: str, body: str) -> str:
    """A self-contained HTML page: ``body`` is trusted HTML, ``title`` is escaped."""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}
figure{{display:inline-block;margin:6px;width:200px;font-size:12px;vertical-align:top}}</style></head><body>
<h1>{html.escape(title)}</h1>{body}</body></html>"""


def write_page(out: Path, title: str, body: str, name: str = "report.html") -> Path:
    """Write ``page(title, body)`` to ``out/name`` atomically; returns its path."""
    path = out / name
    atomic_write_text(path, page(title, body))
    return path


def embed(png_bytes: bytes) -> str:
    """An <img> carrying ``png_bytes`` inline, so a report is one file."""
    return f'<img src="data:image/png;base64,{base64.b64encode(png_bytes).decode()}">'
