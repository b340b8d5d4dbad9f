"""Number and text formatting of the report renderers: SI prefixes, counts, shares, quantities with their sources.
"""

from __future__ import annotations

import math
COMPONENT_LABELS = {
    "synaptic_ops": "synaptic ops", "neuron_updates_active": "neuron updates (active)",
    "neuron_updates_inactive": "neuron updates (inactive)", "spike_messages": "spike messages",
    "hops": "mesh hops", "offcore_ops": "off-core ops (embedded processors)", "chip_links": "chip-to-chip links",
    "static": "static",
}
_PREFIXES = [(1e-12, "p"), (1e-9, "n"), (1e-6, "µ"), (1e-3, "m"), (1.0, ""), (1e3, "k")]


def is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def si_prefix(x: float) -> tuple[float, str]:
    """(scale, prefix) that puts |x| in [1, 1000) for the prefixes p…k; 0 gets no prefix."""
    a = abs(x)
    if a == 0 or not math.isfinite(a):
        return 1.0, ""
    chosen = _PREFIXES[0]
    for scale, prefix in _PREFIXES:
        if a >= scale * (1 - 5e-4):  # 999.96 pJ rounds to 1 nJ, not "1e+03 pJ"
            chosen = (scale, prefix)
    return chosen


def fmt_si(x, unit: str, digits: int = 3) -> str:
    """``2.36e-11, "J"`` → ``23.6 pJ``; None → ``—``."""
    if x is None:
        return "—"
    if not is_num(x):
        return str(x)
    if x == 0:
        return f"0 {unit}"
    if not math.isfinite(x):
        return f"{x} {unit}"
    scale, prefix = si_prefix(x)
    return f"{x / scale:.{digits}g} {prefix}{unit}"


def fmt_energy(x) -> str:
    return fmt_si(x, "J")


def fmt_time(x) -> str:
    return fmt_si(x, "s")


def fmt_count(x) -> str:
    """Counts with thousands separators; fractional counts (means per inference) keep 1–3 digits."""
    if x is None:
        return "—"
    if isinstance(x, bool) or not is_num(x):
        return str(x)
    if not math.isfinite(x):
        return str(x)
    if float(x).is_integer():
        return f"{int(x):,}"
    if abs(x) >= 100:
        return f"{x:,.1f}"
    return f"{x:.3g}"


def fmt_pct(x, digits: int = 1) -> str:
    if x is None:
        return "—"
    if not is_num(x):
        return str(x)
    return f"{100 * x:.{digits}f} %"


def fmt_ratio(x) -> str:
    """A dimensionless rate such as spikes per neuron per step."""
    if x is None:
        return "—"
    if not is_num(x):
        return str(x)
    return f"{x:.3g}"


def fmt_edp(x) -> str:
    if x is None:
        return "—"
    if not is_num(x):
        return str(x)
    return "0 J·s" if x == 0 else f"{x:.3g} J·s"


def fmt_quantity(q: dict | None) -> str:
    """A spec value with its unit: J, s and W get SI prefixes, counts get separators."""
    if not q:
        return "—"
    value, unit = q.get("value"), (q.get("unit") or "")
    if unit in ("J", "s", "W", "Hz", "V"):
        return fmt_si(value, unit)
    if unit == "bool":
        return "yes" if value else "no"
    return (fmt_count(value) + (f" {unit}" if unit else "")).strip()


def cite(q: dict | None) -> str:
    """``[S] source (where)``."""
    if not q:
        return "—"
    text = f"[{q.get('tag', '?')}] {q.get('source', '')}".rstrip()
    return text + (f" ({q['where']})" if q.get("where") else "")


def alternatives(q: dict) -> str:
    alts = q.get("alternatives") or []
    if not alts:
        return ""
    return "; ".join(f"{fmt_quantity({'unit': q.get('unit'), **a})} {cite(a)}" for a in alts)


def shape_text(shape) -> str:
    if shape is None:
        return "—"
    if isinstance(shape, (list, tuple)):
        return "×".join(str(s) for s in shape)
    return str(shape)


def block_text(block) -> str:
    """``[[0, 16], [0, 8]]`` → ``0:16, 0:8``."""
    if not block:
        return "—"
    parts = []
    for r in block:
        if isinstance(r, (list, tuple)) and len(r) == 2:
            parts.append(f"{r[0]}:{r[1]}")
        else:
            parts.append(str(r))
    return ", ".join(parts)


def label(key: str) -> str:
    return COMPONENT_LABELS.get(key, key.replace("_", " "))


def yes_no(x) -> str:
    return "—" if x is None else ("yes" if x else "no")


def cell(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return yes_no(v)
    if is_num(v):
        return fmt_count(v) if float(v).is_integer() else f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(cell(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k}: {cell(x)}" for k, x in v.items())
    return str(v)
