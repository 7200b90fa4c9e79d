"""The report as one self-contained HTML page: tables, and every figure inlined as a base64 data URI.

No external asset (stylesheet, script, font, image link), so the file can be mailed or archived
alone and opened offline.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Sequence

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; overflow-wrap: anywhere; }
@media (max-width: 40em) { body { margin: 0.5em; } }
.table { overflow-x: auto; margin: 0.5em 0 1.5em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #eee; }
figure { margin: 0.5em 0 1.5em; }
img { max-width: 100%; height: auto; }
figcaption, .small { font-size: 0.85em; color: #555; }
"""


def data_uri(png: str | Path) -> str:
    """`data:image/png;base64,...` of a PNG file."""
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def html_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def figure(png: str | Path, caption: str) -> str:
    return (f'<figure><img src="{data_uri(png)}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def render_page(title: str, sections: Sequence[tuple[str, str]], footer: Sequence[str]) -> str:
    """The whole page: `sections` are (heading, inner HTML already escaped), `footer` plain lines."""
    parts = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
             '<meta name="viewport" content="width=device-width, initial-scale=1">',  # phones: not a zoomed-out page
             f"<title>{escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>"]
    for heading, inner in sections:
        parts.append(f"<section><h2>{escape(heading)}</h2>{inner}</section>")
    parts.append("<footer>" + "".join(f'<p class="small">{escape(line)}</p>' for line in footer) + "</footer>")
    parts.append("</body></html>\n")
    return "".join(parts)
