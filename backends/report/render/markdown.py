"""``report.md``: the document model as markdown.
"""

from __future__ import annotations

from backends.report.render.document import document


def md_text(s) -> str:
    """Escape the characters that would turn text into markup or raw HTML (``[P]`` stays as is)."""
    s = str(s)
    for ch in ("\\", "`", "*", "<", ">"):
        s = s.replace(ch, "\\" + ch)
    return s


def _md_cell(s) -> str:
    return md_text(s).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _md_table(headers, rows) -> list[str]:
    out = ["| " + " | ".join(_md_cell(h) for h in headers) + " |",
           "| " + " | ".join("---" for _ in headers) + " |"]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return out


def to_markdown(report: dict) -> str:
    """The report as markdown (plots are in the HTML only)."""
    lines: list[str] = []
    for block in document(report, []):
        kind = block[0]
        if kind == "h":
            lines += ["#" * block[1] + " " + md_text(block[2]), ""]
        elif kind == "p":
            lines += [md_text(block[1]), ""]
        elif kind == "note":
            lines += [f"> **{md_text(block[1])}:** " + md_text(block[2]).replace("\n", "\n> "), ""]
        elif kind == "list":
            lines += [f"- {md_text(item)}" for item in block[1]] + [""]
        elif kind == "table":
            _, headers, rows, limit, omitted = block
            shown = rows if limit is None else rows[:limit]
            lines += _md_table(headers, shown) + [""]
            if len(shown) < len(rows):
                lines += [f"*{md_text(omitted)}*", ""]
    return "\n".join(lines).rstrip() + "\n"
