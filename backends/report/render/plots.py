"""The report's plots, drawn on matplotlib's Agg canvas (no pyplot). ``PLOTS`` names every plot and
its drawing function; ``plot_names`` picks those a report gets.
"""

from __future__ import annotations

import io
import math

from backends.report.render.document import component_keys, static_energy, check
from backends.report.render.format import fmt_energy, is_num, label, si_prefix
PLOT_TITLES = {
    "core_utilization": "Core map: utilization per core",
    "energy_per_layer": "Energy per layer by component",
    "spike_activity": "Spike activity per layer",
    "accuracy_energy_vs_T": "Accuracy and energy against T",
}


def _new_figure(width: float, height: float):
    # an Agg canvas attached to a bare Figure: no pyplot, no global backend state, no display
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    # a bare Figure is registered nowhere (unlike pyplot's), so dropping it frees it: nothing to close
    return buf.getvalue()


def _sub_grid(cores_per_tile: int) -> tuple[int, int]:
    """(columns, rows) of the cells inside one tile, e.g. 4 → 2×2."""
    n = max(int(cores_per_tile), 1)
    cols = math.ceil(math.sqrt(n))
    return cols, math.ceil(n / cols)


def _core_positions(mapping: dict) -> tuple[list, int, int, int, int]:
    """Place every core in its chip/tile; cores sharing a tile fill its cells in index order."""
    mesh = mapping.get("mesh") or {}
    cores = mapping.get("per_core") or []
    tx, ty = int(mesh.get("tiles_x") or 1), int(mesh.get("tiles_y") or 1)
    cpt = int(mesh.get("cores_per_tile") or 1)
    cpc = int(mesh.get("cores_per_chip") or tx * ty * cpt)
    placed, slots = [], {}
    for c in sorted(cores, key=lambda c: c.get("index", 0)):
        idx = int(c.get("index", 0))
        chip = c.get("chip")
        tile = c.get("tile")
        if chip is None:
            chip = idx // cpc
        if not (isinstance(tile, (list, tuple)) and len(tile) == 2):
            t = (idx % cpc) // cpt
            tile = (t % tx, t // tx)
        key = (int(chip), int(tile[0]) % tx, int(tile[1]) % ty)  # the tile within its chip (tiles are global)
        slot = slots.get(key, 0)
        slots[key] = slot + 1
        placed.append((c, key, slot % cpt))
    chips = max([int(mapping.get("chips") or 1)] + [k[0] + 1 for _, k, _ in placed])
    return placed, chips, tx, ty, cpt


MAX_CHIPS_DRAWN = 8  # core by core up to this many chips; beyond, one cell per chip on the system's grid


def _plot_chips(report: dict, placed: list, chips: int) -> bytes:
    """One cell per chip at its place on the system's grid, colored by the share of its cores used."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    system = (report.get("hardware") or {}).get("system") or {}
    gx, gy = (system.get("grid") or [chips, 1])[:2]
    per_chip = int((report["mapping"].get("mesh") or {}).get("cores_per_chip") or 1)
    used = [0] * chips
    for _, (chip, _, _), _ in placed:
        used[chip] += 1
    cmap, norm = colormaps["viridis"], Normalize(0.0, 1.0)
    fig = _new_figure(min(14.0, 1.0 + 0.3 * gx), min(10.0, 1.2 + 0.3 * gy))
    ax = fig.add_subplot(1, 1, 1)
    for c in range(gx * gy):
        row, r = divmod(c, gx)
        x = r if row % 2 == 0 else gx - 1 - r  # the serpentine chip order of backends.hardware.spec.SystemSpec
        share = used[c] / per_chip if c < chips else None
        ax.add_patch(Rectangle((x + 0.05, row + 0.05), 0.9, 0.9, ec="#999", lw=0.3,
                               fc=cmap(norm(share)) if share else "#f3f3f3"))
    ax.set_xlim(0, gx)
    ax.set_ylim(gy, 0)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"Chip map: {sum(used):,} cores on {chips} of {gx * gy} chips"
                 f"{' of ' + system['name'] if system else ''}; color = share of the chip's cores used", fontsize=10)
    cb = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.03, pad=0.01)
    cb.set_label("cores used / cores per chip")
    return _png(fig)


def plot_core_utilization(report: dict) -> bytes:
    """Chip meshes side by side; each used core colored by its highest utilization, labeled by layer."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    mapping = report["mapping"]
    placed, chips, tx, ty, cpt = _core_positions(mapping)
    if chips > MAX_CHIPS_DRAWN:
        return _plot_chips(report, placed, chips)
    sc, sr = _sub_grid(cpt)
    tile_w, tile_h = sc + 0.5, sr + 0.5  # 0.25 margin around each tile's cells
    chip_w, chip_h = tx * tile_w, ty * tile_h
    gap = 1.5
    layer_names: list = [ly.get("name") for ly in mapping.get("layers") or []]
    for c, _, _ in placed:
        if c.get("layer") not in layer_names:
            layer_names.append(c.get("layer"))
    layer_no = {name: i for i, name in enumerate(layer_names)}
    edge_cmap = colormaps["tab20" if len(layer_names) > 10 else "tab10"]
    cmap, norm = colormaps["viridis"], Normalize(0.0, 1.0)

    total_w = chips * chip_w + (chips - 1) * gap
    cell_in = min(0.42, 15.0 / max(total_w, 1))
    legend_rows = math.ceil(len(layer_names) / 4)
    fig = _new_figure(max(total_w * cell_in + 2.2, 6.5), chip_h * cell_in + 1.6 + 0.22 * legend_rows)
    ax = fig.add_subplot(1, 1, 1)
    font = max(4.5, min(8.0, cell_in * 17))
    for chip in range(chips):
        x0 = chip * (chip_w + gap)
        ax.add_patch(Rectangle((x0 - 0.1, -0.1), chip_w + 0.2, chip_h + 0.2, fill=False, lw=1.8, ec="#333"))
        ax.text(x0 + chip_w / 2, -0.35, f"chip {chip}", ha="center", va="bottom", fontsize=10, weight="bold")
        for x in range(tx):
            for y in range(ty):
                ox, oy = x0 + x * tile_w, y * tile_h
                ax.add_patch(Rectangle((ox + 0.1, oy + 0.1), tile_w - 0.2, tile_h - 0.2, fill=True,
                                       fc="#f3f3f3", ec="#999", lw=0.6))
                for s in range(cpt):
                    ax.add_patch(Rectangle((ox + 0.25 + s % sc, oy + 0.25 + s // sc), 1, 1, fc="white",
                                           ec="#cfcfcf", lw=0.4))
    for c, (chip, x, y), s in placed:
        util = [v for v in (c.get("utilization") or {}).values() if is_num(v)]
        u = max(util) if util else 0.0
        cx = chip * (chip_w + gap) + x * tile_w + 0.25 + s % sc
        cy = y * tile_h + 0.25 + s // sc
        n = layer_no[c.get("layer")]
        ax.add_patch(Rectangle((cx + 0.06, cy + 0.06), 0.88, 0.88, fc=cmap(norm(min(max(u, 0.0), 1.0))),
                               ec=edge_cmap(n % edge_cmap.N), lw=2.0))
        r, g, b, _ = cmap(norm(min(max(u, 0.0), 1.0)))
        ax.text(cx + 0.5, cy + 0.5, f"L{n}", ha="center", va="center", fontsize=font,
                color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white")
    ax.set_xlim(-0.6, total_w + 0.6)
    ax.set_ylim(chip_h + 0.4, -0.9)  # tile row 0 at the top
    ax.set_aspect("equal")
    ax.axis("off")
    used, slots = len(placed), chips * tx * ty * cpt
    ax.set_title(f"Core map: {used:,} of {slots:,} cores used on {chips} chip(s) "
                 f"({tx}×{ty} tiles, {cpt} cores per tile); color = highest utilization", fontsize=10)
    sm = ScalarMappable(norm=norm, cmap=cmap)
    cb = fig.colorbar(sm, ax=ax, fraction=0.03, pad=0.01)
    cb.set_label("highest utilization of the core (0–1)")
    handles = [Line2D([], [], marker="s", ls="", ms=9, mfc="white", mec=edge_cmap(i % edge_cmap.N), mew=2,
                      label=f"L{i}: {name}") for i, name in enumerate(layer_names)]
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=min(4, len(handles)),
                  fontsize=8, frameon=False, title="layer (outline color, label in cell)", title_fontsize=8)
    return _png(fig)


def plot_energy_per_layer(report: dict) -> bytes:
    """Stacked horizontal bars of each layer's dynamic energy by component; static energy in the title."""
    from matplotlib import colormaps
    energy = report["energy"]
    per_layer = energy.get("per_layer") or {}
    names = list(per_layer)
    keys = component_keys(per_layer)
    totals = [sum(v for v in p.values() if is_num(v)) for p in per_layer.values()]
    scale, prefix = si_prefix(max(totals + [0.0]) or 1.0)
    fig = _new_figure(9.0, max(2.8, 0.42 * len(names) + 1.8))
    ax = fig.add_subplot(1, 1, 1)
    colors = colormaps["tab10"]
    left = [0.0] * len(names)
    ypos = list(range(len(names)))
    for i, k in enumerate(keys):
        vals = [(per_layer[n].get(k) or 0.0) / scale for n in names]
        ax.barh(ypos, vals, left=left, color=colors(i % 10), label=label(k), height=0.7)
        left = [a + b for a, b in zip(left, vals)]
    for y, t in zip(ypos, totals):
        ax.text(t / scale, y, " " + fmt_energy(t), va="center", fontsize=8)
    ax.set_yticks(ypos)
    ax.set_yticklabels(names, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel(f"dynamic energy per inference ({prefix}J)")
    ax.set_xlim(0, max(left + [1e-30]) * 1.18 if any(left) else 1)
    static = static_energy(energy)
    ax.set_title(f"Dynamic energy per layer by component (total dynamic {fmt_energy(energy.get('dynamic'))});\n"
                 f"static energy {fmt_energy(static)} per inference for the whole chip(s) is not shown as bars",
                 fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    if keys:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(len(keys), 5),
                  frameon=False)
    return _png(fig)


def plot_spike_activity(report: dict) -> bytes:
    """Grouped bars per spiking layer: spike rate (left axis) and fraction of active neurons (right axis)."""
    layers = (report.get("activity") or {}).get("layers") or []
    names = [ly.get("name", "?") for ly in layers]
    rate = [ly.get("spike_rate") or 0.0 for ly in layers]
    frac = [ly.get("active_fraction") or 0.0 for ly in layers]
    fig = _new_figure(max(6.5, 0.7 * len(names) + 3), 4.4)
    ax = fig.add_subplot(1, 1, 1)
    ax2 = ax.twinx()
    x = list(range(len(names)))
    w = 0.38
    b1 = ax.bar([i - w / 2 for i in x], rate, w, color="#1f77b4", label="spike rate (left axis)")
    b2 = ax2.bar([i + w / 2 for i in x], frac, w, color="#ff7f0e", label="active fraction (right axis)")
    ax.set_ylabel("spike rate (unit spikes / neuron / step)", color="#1f77b4")
    ax2.set_ylabel("fraction of neurons active", color="#ff7f0e")
    ax.set_ylim(0, max(rate + [0.0]) * 1.15 or 1.0)
    ax2.set_ylim(0, max(1.0, max(frac + [0.0]) * 1.05))
    ax.set_xticks(x)
    rotate = len(names) > 5 or max((len(n) for n in names), default=0) > 12
    ax.set_xticklabels(names, rotation=35 if rotate else 0, ha="right" if rotate else "center", fontsize=9)
    ax.set_xlabel("spiking layer")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    per = (report.get("activity") or {}).get("per", "inference")
    ax.set_title(f"Spike activity per layer (averaged per {per})", fontsize=10)
    ax.legend(handles=[b1, b2], fontsize=8, loc="upper right")
    return _png(fig)


def plot_accuracy_energy_vs_T(report: dict) -> bytes:
    """Two panels against T: energy per inference (log y) and accuracy, one point per fitting row."""
    from matplotlib import colormaps
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
    rows = report.get("across_T") or []
    methods: list = []
    for r in rows:
        if r.get("method") not in methods:
            methods.append(r.get("method"))
    colors = colormaps["tab10"]
    markers = "osD^v<>ph*"
    fig = _new_figure(7.5, 6.2)
    ax_e, ax_a = fig.subplots(2, 1, sharex=True)
    ts = sorted({r["timesteps"] for r in rows if is_num(r.get("timesteps"))})
    energies = [r.get(k) for r in rows for k in ("energy_total_J", "energy_dynamic_J")
                if r.get("fits", True) and is_num(r.get(k))]
    log_e = any(e > 0 for e in energies)
    for i, m in enumerate(methods):
        sel = sorted((r for r in rows if r.get("method") == m and r.get("fits", True)
                      and is_num(r.get("timesteps"))), key=lambda r: r["timesteps"])
        color, marker = colors(i % 10), markers[i % len(markers)]
        for key, style, what in (("energy_total_J", "-", "total"), ("energy_dynamic_J", "--", "dynamic")):
            pts = [(r["timesteps"], r[key]) for r in sel if is_num(r.get(key)) and (r[key] > 0 or not log_e)]
            if pts:
                ax_e.plot([p[0] for p in pts], [p[1] for p in pts], style, marker=marker, color=color,
                          mfc=color if what == "total" else "white", label=f"{m}: {what}")
        pts = [(r["timesteps"], 100 * r["accuracy"]) for r in sel if is_num(r.get("accuracy"))]
        if pts:
            ax_a.plot([p[0] for p in pts], [p[1] for p in pts], "-", marker=marker, color=color, label=str(m))
    misfits = [r for r in rows if r.get("fits") is False and is_num(r.get("timesteps"))]
    for r in misfits:
        ax_e.axvline(r["timesteps"], color="#c00", ls=":", lw=1)
    if misfits:
        ax_e.plot([], [], color="#c00", ls=":", label="does not fit")
    if log_e:
        ax_e.set_yscale("log")
    ax_e.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_energy(v)))
    ax_e.set_ylabel("energy per inference (log scale)" if log_e else "energy per inference")
    ax_e.set_title("Energy and accuracy against timesteps T", fontsize=10)
    ax_e.grid(True, which="both", alpha=0.3)
    ax_a.set_ylabel("accuracy (%)")
    ax_a.set_xlabel("timesteps T")
    ax_a.grid(True, alpha=0.3)
    if ts and ts[0] > 0 and ts[-1] / ts[0] >= 8:
        ax_a.set_xscale("log", base=2)
    if ts:
        ax_a.xaxis.set_major_locator(FixedLocator(ts))
        ax_a.xaxis.set_minor_locator(NullLocator())
        ax_a.set_xticklabels([str(t) for t in ts])
    for ax in (ax_e, ax_a):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
        else:
            ax.text(0.5, 0.5, "no values to plot (no row fits, or none was measured)", transform=ax.transAxes,
                    ha="center", va="center")
    return _png(fig)


def plot_names(report: dict) -> list[str]:
    """The plots this report gets."""
    names = ["core_utilization", "energy_per_layer", "spike_activity"]
    if len(report.get("across_T") or []) >= 2:
        names.append("accuracy_energy_vs_T")
    return names


def plots(report: dict) -> dict[str, bytes]:
    """PNG bytes per plot name (see :func:`plot_names`)."""
    check(report)
    out = {}
    for name in plot_names(report):
        out[name] = PLOTS[name](report)
    return out


# Every plot, by name: what the report shows and in which order (``plot_names`` picks).
PLOTS = {"core_utilization": plot_core_utilization, "energy_per_layer": plot_energy_per_layer,
         "spike_activity": plot_spike_activity, "accuracy_energy_vs_T": plot_accuracy_energy_vs_T}
