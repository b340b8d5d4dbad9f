"""Lava's data layout, without Lava: the reordering between n2c's IR and Lava's Processes.

The IR is torch-ordered, (C, H, W); Lava's Conv works on (X, Y, C) = (W, H, C). Lava's
Conv computes a true convolution (scipy ``convolve2d``), torch a correlation, so conv
kernels are flipped spatially. Dense weights index the C-order (C, H, W) flattening; when a
Dense reads a conv-shaped port, its columns are permuted to Lava's (W, H, C) order. Lava's
Conv keeps groups in an int8 Var, so larger groups are re-expressed as fewer groups with
block-diagonal kernels. Importing this module does not start Lava (netx export and the
portable NIR form use it).
"""

from __future__ import annotations

import numpy as np

LAVA_INT8_MAX = 127  # Lava's Conv stores kernel size, stride, padding, dilation and groups as int8


def lava_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """IR (C, H, W) → Lava (W, H, C); flat shapes are unchanged."""
    return tuple(shape[::-1]) if len(shape) == 3 else tuple(shape)


def to_lava(a: np.ndarray, lead: int = 0) -> np.ndarray:
    """Reorder the trailing (C, H, W) axes of ``a`` (after ``lead`` leading axes) to (W, H, C)."""
    if a.ndim - lead != 3:
        return a
    return np.moveaxis(a, [lead, lead + 1, lead + 2], [lead + 2, lead + 1, lead])


def from_lava(a: np.ndarray, lead: int = 0) -> np.ndarray:
    """Inverse of :func:`to_lava` (the permutation is its own inverse)."""
    return to_lava(a, lead)


def dense_columns_for_lava(weight: np.ndarray, in_shape: tuple[int, ...]) -> np.ndarray:
    """Permute the columns of an IR dense weight so they index Lava's flattened (W, H, C) input."""
    if len(in_shape) != 3:
        return weight
    ir_index = np.arange(int(np.prod(in_shape))).reshape(in_shape)
    return weight[:, to_lava(ir_index).ravel()]


def conv_weight_for_lava(weight: np.ndarray) -> np.ndarray:
    """torch correlation kernel (Cout, Cin/g, kH, kW) → Lava convolution kernel (Cout, kW, kH, Cin/g)."""
    return np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(0, 3, 2, 1))


def regroup_conv_weight(weight: np.ndarray, groups: int, new_groups: int) -> np.ndarray:
    """Re-express a grouped conv kernel with ``new_groups`` (a divisor of ``groups``) coarser
    groups: each coarse group holds a block-diagonal kernel with zeros across fine groups."""
    cout, cin_g = weight.shape[:2]
    cin = cin_g * groups
    full = np.zeros((cout, cin, *weight.shape[2:]), dtype=weight.dtype)
    rows = np.arange(cout) // (cout // groups)
    for g in range(groups):
        full[rows == g, g * cin_g:(g + 1) * cin_g] = weight[rows == g]
    coarse = np.arange(cout) // (cout // new_groups)
    cin_new = cin // new_groups
    return np.stack([full[o, c * cin_new:(c + 1) * cin_new] for o, c in enumerate(coarse)])


def lava_groups(groups: int) -> int:
    """Largest divisor of ``groups`` that Lava's int8 ``groups`` Var holds."""
    return max(d for d in range(1, min(groups, LAVA_INT8_MAX) + 1) if groups % d == 0)
