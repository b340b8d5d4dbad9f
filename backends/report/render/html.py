"""``report.html``: the document model as one self-contained page (inline CSS, plots as base64 PNG,
no external resources, no JavaScript).
"""

from __future__ import annotations

import base64
import html

from backends.report.render.document import check, document
from backends.report.render.plots import PLOT_TITLES, plots
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #345;padding-bottom:.2em}
h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ccd;padding-bottom:.15em}
.note{background:#fff6d6;border-left:5px solid #e0a800;padding:.7em 1em;margin:1em 0}
.meta{color:#555;font-size:.92em}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.86em}
th,td{border:1px solid #ccd;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#eef1f6;position:sticky;top:0}
tr:nth-child(even) td{background:#f8f9fb}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
figure{margin:1em 0}
figure img{max-width:100%;height:auto;border:1px solid #dde}
figcaption{color:#555;font-size:.9em}
nav{font-size:.9em}
""".strip()


def _looks_numeric(s: str) -> bool:
    s = s.strip()
    return bool(s) and (s[0].isdigit() or (s[0] in "-—" and len(s) <= 1) or (s[0] == "-" and s[1:2].isdigit()))


def _h(s) -> str:
    return html.escape(str(s), quote=True)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


def to_html(report: dict, images: dict[str, bytes] | None = None) -> str:
    """One self-contained HTML page: the markdown's content plus the plots as base64 PNG.

    ``images`` (name → PNG bytes, as from :func:`plots`) avoids drawing the plots twice.
    """
    check(report)
    if images is None:
        images = plots(report)
    doc = document(report, list(images))
    heads = [b for b in doc if b[0] == "h" and b[1] == 2]
    body: list[str] = []
    for block in doc:
        kind = block[0]
        if kind == "h":
            level, text = block[1], block[2]
            body.append(f'<h{level} id="{_slug(text)}">{_h(text)}</h{level}>')
        elif kind == "p":
            body.append(f"<p>{_h(block[1])}</p>")
        elif kind == "note":
            body.append(f'<div class="note"><strong>{_h(block[1])}:</strong> {_h(block[2])}</div>')
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{_h(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            _, headers, rows, _limit, _omitted = block
            t = ['<div class="scroll"><table>', "<thead><tr>" + "".join(f"<th>{_h(x)}</th>" for x in headers)
                 + "</tr></thead>", "<tbody>"]
            for row in rows:
                t.append("<tr>" + "".join(
                    f'<td class="num">{_h(c)}</td>' if _looks_numeric(str(c)) else f"<td>{_h(c)}</td>"
                    for c in row) + "</tr>")
            t.append("</tbody></table></div>")
            body.append("\n".join(t))
        elif kind == "plot":
            name = block[1]
            b64 = base64.b64encode(images[name]).decode("ascii")
            caption = PLOT_TITLES.get(name, name)
            body.append(f'<figure><img alt="{_h(caption)}" src="data:image/png;base64,{b64}">'
                        f"<figcaption>{_h(caption)}</figcaption></figure>")
    # a table of contents after the title, hardware note and meta line
    nav = ('<nav><strong>Sections:</strong> '
           + " · ".join(f'<a href="#{_slug(b[2])}">{_h(b[2])}</a>' for b in heads) + "</nav>")
    insert_at = next((i + 1 for i, line in enumerate(body) if line.startswith("<p>")), 1)
    body[insert_at - 1] = body[insert_at - 1].replace("<p>", '<p class="meta">', 1)
    body.insert(insert_at, nav)
    title = next((b[2] for b in doc if b[0] == "h" and b[1] == 1), "n2c report")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_h(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
