"""The sizes n2c accepts, checked against what a file or an option declares before anything
of that size is allocated. Each limit is far above the networks n2c targets (ImageNet VGG-16
and ResNet-50 layers, T of a few hundred) and far below what would exhaust a machine.
"""

from __future__ import annotations

import math
from typing import Iterable

from n2c.errors import N2CError

MAX_LAYER_ELEMENTS = 2 ** 26  # neurons (values) in one layer: 64 Mi; VGG-16's largest layer has 3.2 Mi
MAX_WEIGHTS = 2 ** 28  # weights of one synapse matrix: 256 Mi (2 GiB in float64); VGG-16's largest has 103 Mi
MAX_TIMESTEPS = 2 ** 16  # timesteps per sample
MAX_NODES = 100_000  # nodes in one NIR graph (after nested graphs are inlined)
MAX_NESTING = 64  # depth of nested NIR graphs
MAX_RUN_BYTES = 8 * 2 ** 30  # values one simulation call may hold at once (chunks are smaller)
CHUNK_BYTES = 2 ** 25  # streamed runs: about this many bytes of messages per chunk (cache-sized, and memory
# stays flat in the number of samples; measured in docs/results/streaming.md)


def elements(shape: Iterable[int]) -> int:
    """The element count of ``shape``, exactly (Python integers never overflow)."""
    return math.prod(int(s) for s in shape)


def check_elements(what: str, shape: Iterable[int], limit: int = MAX_LAYER_ELEMENTS,
                   error: type[N2CError] = N2CError) -> int:
    """The element count of ``shape``, or ``error`` naming ``what`` when it passes ``limit``."""
    shape = tuple(int(s) for s in shape)
    n = elements(shape)
    if n > limit:
        raise error(f"{what} declares shape {shape}: {n:,} values, over n2c's limit of {limit:,}; "
                    "check the file, or split the layer")
    return n


def check_timesteps(what: str, timesteps: int, error: type[N2CError] = N2CError) -> int:
    if timesteps > MAX_TIMESTEPS:
        raise error(f"{what}: {timesteps:,} timesteps, over n2c's limit of {MAX_TIMESTEPS:,}; check the value")
    return timesteps
