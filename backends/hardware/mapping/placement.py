"""Placement of the cores on the mesh of tiles and chips.

Placement (a heuristic for hops)
    Cores in topological order follow a serpentine walk over each chip's tiles (rows of
    ``mesh_tiles_x`` tiles, alternating direction, ``cores_per_tile`` slots per tile, the first
    ``cores_per_chip`` slots of a chip usable); chip i occupies x ∈ [i·tiles_x, (i+1)·tiles_x).
    A deterministic local search then swaps the contents of two slots (a core, or an empty slot)
    while that lowers  Σ_{core pairs} traffic · (|Δx| + |Δy|)  + Σ_cores host traffic · (x + y),
    traffic being the fan-out edges between the two cores (host: input axons fed by the input).
    Passes over all cores stop when one gains under 1 % of the cost, after 20 passes, or when
    the work (passes · cores · (traffic pairs + slots)) would exceed 2·10⁸; a network too large
    for one pass in that budget (thousands of cores with dense traffic) keeps the serpentine
    order, and so does one of more than 4,096 cores (``network.MAX_SEARCHED_CORES``: the search
    holds cores x cores traffic and slots x slots distances). Hop minimization is a heuristic: it
    finds at best a local optimum.
"""

from __future__ import annotations

import numpy as np

from backends.hardware.mapping.chains import grid_sum
from backends.hardware.spec import ChipSpec
MAX_PASSES = 20  # local search: at most this many passes over all cores,
MIN_GAIN = 100  # ... each lowering the hop cost by at least 1/MIN_GAIN of it,
WORK = 2 * 10 ** 8  # ... and at most about this many array-element operations


def serpentine(chip: ChipSpec, chips: int) -> list[tuple[int, int]]:
    """Global tile (x, y) of every usable core slot, in walk order, chip after chip."""
    tx, ty = chip.mesh
    slots = []
    for c in range(chips):
        walk = [(c * tx + (x if y % 2 == 0 else tx - 1 - x), y) for y in range(ty) for x in range(tx)]
        slots += [t for t in walk for _ in range(chip.int("cores_per_tile"))][:chip.int("cores_per_chip")]
    return slots


def improve_placement(slots: list, traffic: np.ndarray, host: np.ndarray) -> np.ndarray:
    """Local search: slot index of every core after best-improvement swaps, core by core.

    Swapping items u and v (cores or empty slots) changes the cost by
    Δ_v = Σ_{k≠u,v} (T_uk − T_vk)(D_vk − D_uk) + (h_u − h_v)(r_v − r_u)
        = a_v − c_u − c_v + b_v + 2·T_uv·D_uv + (h_u − h_v)(r_v − r_u),
    with T traffic, D the distance between the items' slots, r a slot's distance to the host
    tile, a_v = Σ_k T_uk·D_vk, b_v = Σ_k T_vk·D_uk and c_v = Σ_k T_vk·D_vk."""
    p, n = len(slots), len(traffic)
    rows, cols = np.nonzero(traffic)
    weights = traffic[rows, cols]
    first = np.searchsorted(rows, np.arange(n + 1))  # u's neighbours: cols[first[u]:first[u + 1]]
    h = np.zeros(p, np.int64)
    h[:n] = host
    xy = np.array(slots, np.int64)
    dist = np.abs(xy[:, None, :] - xy[None, :, :]).sum(axis=2)
    r = xy.sum(axis=1)
    pos = np.arange(p)  # slot of every item

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
    cost = c.sum() // 2 + (h * r[pos]).sum()
    for _ in range(passes):
        gain = 0
        for u in range(n):
            nbr, w = cols[first[u]:first[u + 1]], weights[first[u]:first[u + 1]]
            t_u = np.zeros(p, np.int64)
            t_u[nbr] = w
            d_u = dist[pos[u], pos]
            delta = dist[np.ix_(pos, pos[nbr])] @ w - c[u] - c + b_of(d_u) + 2 * t_u * d_u \
                + (h[u] - h) * (r[pos] - r[pos[u]])
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


def core_traffic(layers, plans, masks, comp, conns, n) -> tuple[np.ndarray, np.ndarray]:
    """Fan-out edges between blocks (symmetric) and from the host to each block."""
    by_name = {lm.name: lm for lm in layers}
    traffic, host = np.zeros((n, n), np.int64), np.zeros(n, np.int64)
    for src, dst, union in masks:  # (source, target, union masks (target blocks, *source shape)), one at a time
        into = by_name[dst].blocks
        if src not in plans:  # off the neuro cores: the input, or a product on the embedded processors
            m = next(c.axons_per_source for c in conns if c.source == src and c.target == dst)
            host[into] += union.reshape(len(union), -1).sum(axis=1) * m
            continue
        starts = plans[src][0]
        edges = grid_sum(union.astype(np.int64), starts, 1).reshape(len(union), -1) * comp[src]
        traffic[np.ix_(into, by_name[src].blocks)] += edges
    return traffic + traffic.T, host
