"""Placement of the cores on chips and on each chip's mesh of tiles.

Chips (crossings first)
    The cores, in topological order, are cut into as few chips as the network needs
    (K = ⌈cores / cores_per_chip⌉), each a contiguous run of at most ``cores_per_chip`` cores.
    Of all such cuts, :func:`assign_chips` takes one that minimizes the traffic across chip
    boundaries, Σ over cuts of the fan-out edges spanning the cut (an edge spanning k cuts counts
    k times: it crosses k chip-to-chip links when consecutive chips are neighbours, as the
    system's serpentine chip order makes them). Dynamic programme over cut positions:
    F_j(p) = cut(p) + min_{p−C ≤ q < p} F_{j−1}(q), exact, O(K · cores · C).

Tiles (hops within a chip, a heuristic)
    On each chip its cores follow a serpentine walk over the chip's tiles (rows of
    ``mesh_tiles_x`` tiles, alternating direction, ``cores_per_tile`` slots per tile, the first
    ``cores_per_chip`` slots usable); chip c's tiles start at ``ChipSpec.chip_origin(c)``. A
    deterministic local search then swaps the contents of two slots of the chip (a core, or an
    empty slot) while that lowers  Σ_{core pairs} traffic · (|Δx| + |Δy|)  + Σ_cores host
    traffic · (x + y), traffic being the fan-out edges between the two cores (host: input axons
    fed by the input). Passes over the chip's cores stop when one gains under 1 % of the cost,
    after 20 passes, or when the work (passes · cores · (traffic pairs + slots)) would exceed
    2·10⁸. Hop minimization is a heuristic: it finds at best a local optimum.
"""

from __future__ import annotations

import numpy as np

from backends.hardware.spec import ChipSpec
MAX_PASSES = 20  # local search: at most this many passes over all cores,
MIN_GAIN = 100  # ... each lowering the hop cost by at least 1/MIN_GAIN of it,
WORK = 2 * 10 ** 8  # ... and at most about this many array-element operations


def serpentine(chip: ChipSpec, chips: int) -> list[tuple[int, int]]:
    """Global tile (x, y) of every usable core slot, in walk order, chip after chip."""
    return [slot for c in range(chips) for slot in chip_slots(chip, c)]


def chip_slots(chip: ChipSpec, c: int) -> list[tuple[int, int]]:
    """Global tile (x, y) of chip c's usable core slots, in serpentine order."""
    tx, ty = chip.mesh
    x0, y0 = chip.chip_origin(c)
    walk = [(x0 + (x if y % 2 == 0 else tx - 1 - x), y0 + y) for y in range(ty) for x in range(tx)]
    return [t for t in walk for _ in range(chip.int("cores_per_tile"))][:chip.int("cores_per_chip")]


def assign_chips(n: int, per_chip: int, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Chip of each of ``n`` cores (in order): K = ⌈n / per_chip⌉ contiguous runs of at most
    ``per_chip`` cores whose boundaries cut the least traffic (edges rows[i]–cols[i] of weight
    weights[i]; an edge spanning several boundaries counts once per boundary)."""
    chips = max(1, -(-n // per_chip))
    if chips == 1:
        return np.zeros(n, np.int64)
    lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
    spans = np.zeros(n + 1)
    np.add.at(spans, lo + 1, weights)
    np.add.at(spans, hi + 1, -weights)
    cut = np.cumsum(spans)  # cut[p]: traffic between cores < p and cores >= p
    inf = np.inf
    f = np.full(n + 1, inf)
    f[0] = 0.0
    back = []
    for _ in range(chips - 1):  # f_j(p): best cost with the j-th boundary at p
        windows = np.lib.stride_tricks.sliding_window_view(np.concatenate([np.full(per_chip, inf), f]), per_chip)
        arg = windows[:n + 1].argmin(axis=1)
        best = windows[np.arange(n + 1), arg]
        back.append(np.arange(n + 1) - per_chip + arg)
        f = best + cut
        f[[0, n]] = inf  # a boundary inside the cores, never at either end
    last = np.arange(max(n - per_chip, 0), n)
    end = int(last[np.argmin(f[last])])
    bounds = [n, end]
    for arg in reversed(back[1:]):
        end = int(arg[end])
        bounds.append(end)
    bounds.append(0)
    bounds = bounds[::-1]
    chip_of = np.zeros(n, np.int64)
    for c, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        chip_of[a:b] = c
    return chip_of


def improve_placement(slots: list, traffic: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """Local search: slot index of every core after best-improvement swaps, core by core.

    ``fixed[u, s]``: the cost of core u in slot s from what does not move (traffic to the host
    and to other chips' cores, times the distance to them). Swapping items u and v (cores or
    empty slots) changes the cost by
    Δ_v = Σ_{k≠u,v} (T_uk − T_vk)(D_vk − D_uk) + F_u(s_v) + F_v(s_u) − F_u(s_u) − F_v(s_v)
        = a_v − c_u − c_v + b_v + 2·T_uv·D_uv + F_u(s_v) + F_v(s_u) − F_u(s_u) − F_v(s_v),
    with T traffic, D the distance between the items' slots, s an item's slot, F = ``fixed``
    (0 for empty slots), a_v = Σ_k T_uk·D_vk, b_v = Σ_k T_vk·D_uk and c_v = Σ_k T_vk·D_vk."""
    p, n = len(slots), len(traffic)
    rows, cols = np.nonzero(traffic)
    weights = traffic[rows, cols]
    first = np.searchsorted(rows, np.arange(n + 1))  # u's neighbours: cols[first[u]:first[u + 1]]
    f = np.zeros((p, p), np.int64)
    f[:n] = fixed
    xy = np.array(slots, np.int64)
    dist = np.abs(xy[:, None, :] - xy[None, :, :]).sum(axis=2)
    pos = np.arange(p)  # slot of every item
    items = np.arange(p)

    def b_of(d_u):  # b_v for every v, from d_u = D_u·
        return np.bincount(rows, weights * d_u[cols], minlength=p)

    def c_of(items):  # c_v for the given items (0 elsewhere)
        chosen = np.zeros(p, bool)
        chosen[items] = True
        sel = chosen[rows]
        return np.bincount(rows[sel], weights[sel] * dist[pos[rows[sel]], pos[cols[sel]]], minlength=p)

    passes = min(MAX_PASSES, WORK // (n * (len(rows) + p)))
    if not passes:  # too large for even one pass within the budget: the serpentine order stands
        return pos[:n]
    c = c_of(np.arange(n))
    cost = c.sum() // 2 + f[items, pos].sum()
    for _ in range(passes):
        gain = 0
        for u in range(n):
            nbr, w = cols[first[u]:first[u + 1]], weights[first[u]:first[u + 1]]
            t_u = np.zeros(p, np.int64)
            t_u[nbr] = w
            d_u = dist[pos[u], pos]
            delta = dist[np.ix_(pos, pos[nbr])] @ w - c[u] - c + b_of(d_u) + 2 * t_u * d_u \
                + f[u, pos] + f[:, pos[u]] - f[u, pos[u]] - f[items, pos]
            delta[u] = 0
            v = int(np.argmin(delta))
            if delta[v] < 0:
                pos[u], pos[v] = pos[v], pos[u]
                moved = np.concatenate([[u, v], nbr, cols[first[v]:first[v + 1]] if v < n else []]).astype(np.int64)
                c[moved] = c_of(moved)[moved]
                gain -= int(delta[v])
        if gain * MIN_GAIN <= cost:  # a pass that gains under 1/MIN_GAIN of the cost ends the search
            break
        cost -= gain
    return pos[:n]


def block_traffic(layers, plans, pairs, comp, conns, n) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fan-out edges between blocks as (source blocks, target blocks, edges) arrays, and per block
    the input axons fed by the host. ``pairs``: (source, target, neurons of each source block
    reaching each target block (target blocks, source blocks; one column for an off-core source)),
    one at a time."""
    by_name = {lm.name: lm for lm in layers}
    rows, cols, weights, host = [], [], [], np.zeros(n, np.int64)
    for src, dst, reach in pairs:
        into = np.asarray(by_name[dst].blocks)
        if src not in plans:  # off the neuro cores: the input, or a product on the embedded processors
            m = next(c.axons_per_source for c in conns if c.source == src and c.target == dst)
            host[into] += reach[:, 0] * m
            continue
        edges = reach * comp[src]
        t, f = np.nonzero(edges)
        rows.append(np.asarray(by_name[src].blocks)[f])
        cols.append(into[t])
        weights.append(edges[t, f])
    join = (lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64))
    return join(rows), join(cols), join(weights), host
