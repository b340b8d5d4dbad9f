"""Render a report dict (``report_version`` 2, built by :mod:`backends.report.build`) for people.

Public API:

* :func:`to_markdown` — ``report.md`` text.
* :func:`to_html` — one self-contained HTML page (inline CSS, plots as base64 PNG, no
  external resources, no JavaScript) with the markdown's content plus the plots.
* :func:`plots` — PNG bytes per plot name (``core_utilization``, ``energy_per_layer``,
  ``spike_activity`` and, with two or more ``across_T`` rows, ``accuracy_energy_vs_T``).
* :func:`write_report` — ``report.json``, ``report.md`` and ``report.html`` written
  atomically: everything is rendered before any file is touched.

The modules: ``document`` (one document model, by section, so the markdown and the HTML
always say the same thing), ``markdown``, ``html``, ``plots`` (an explicit table of plots)
and ``format``.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from n2c.errors import N2CError
from n2c.files import make_output_dir
from backends.report.render.html import to_html
from backends.report.render.markdown import to_markdown
from backends.report.render.plots import PLOTS, plots


def render_all(report: dict) -> dict[str, bytes]:
    """File name → contents of report.json, report.md and report.html, all rendered in memory."""
    try:  # JSON has no Infinity or NaN: a report holding one is a bug upstream, never written
        text = json.dumps(report, indent=2, allow_nan=False) + "\n"
    except ValueError:
        raise N2CError("the report holds an infinite or undefined number (a chip value too large?); nothing "
                       "was written: check the chip spec's values and units") from None
    images = plots(report)
    return {"report.json": text.encode("utf-8"),
            "report.md": to_markdown(report).encode("utf-8"),
            "report.html": to_html(report, images).encode("utf-8")}


def write_report(report: dict, out_dir) -> list[Path]:
    """Write report.json, report.md and report.html into ``out_dir`` (created if missing).

    All three are rendered before anything is written; each goes to a temporary file in
    ``out_dir`` and is moved into place with :func:`os.replace` once every one is written.
    On any failure the temporary files are removed and existing reports stay as they were.
    """
    contents = render_all(report)
    out = Path(out_dir)
    make_output_dir(out)
    temps: dict[str, str] = {}
    try:
        for name, data in contents.items():
            tmp = str(out / f".{name}.{secrets.token_hex(6)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies, as for open()
            temps[name] = tmp
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        paths = []
        for name, tmp in list(temps.items()):
            os.replace(tmp, out / name)
            del temps[name]
            paths.append(out / name)
        return paths
    finally:
        for tmp in temps.values():
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


__all__ = ["PLOTS", "plots", "render_all", "to_html", "to_markdown", "write_report"]
