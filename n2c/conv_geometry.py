"""Convolution geometry shared by the front end and the backends (numpy only).

Output size of a convolution or pool along one axis (input A, padding p, dilation d, kernel k,
stride s):  floor((A + 2p − d(k−1) − 1)/s) + 1.
"""

from __future__ import annotations

import numpy as np


def output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """floor((A + 2p − d(k−1) − 1)/s) + 1 (torch's, floor mode)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def pooled_conv_kernel(weight: np.ndarray, stride: tuple[int, int], dilation: tuple[int, int],
                       pool: tuple[int, int], scale: float) -> np.ndarray:
    """The kernel of one convolution equal to a p×p sum pool (times ``scale``: 1/p² for an average)
    of a convolution (stride s, dilation d, k×k kernel ``weight``): window offsets s·a + d·u add up,
    so the kernel grows to s(p−1) + d(k−1) + 1 taps, ``K[s·a + d·u] = scale · Σ W[u]``. It runs at
    stride s·q (q: the pool's stride) with the conv's padding, for an unpadded pool; the output
    sizes agree (floor((floor(A/s) − (p−1))/q) = floor((A − s(p−1))/(sq)))."""
    (s_h, s_w), (d_h, d_w), (p_h, p_w) = stride, dilation, pool
    k_h, k_w = weight.shape[2:]
    kernel = np.zeros((*weight.shape[:2], s_h * (p_h - 1) + d_h * (k_h - 1) + 1, s_w * (p_w - 1) + d_w * (k_w - 1) + 1),
                      weight.dtype)
    for a in range(p_h):
        for b in range(p_w):
            kernel[:, :, s_h * a: s_h * a + d_h * (k_h - 1) + 1: d_h,
                   s_w * b: s_w * b + d_w * (k_w - 1) + 1: d_w] += weight * scale
    return kernel
