"""Map a quantized network onto the cores and chips of a chip spec.

Map a quantized network onto the cores and chips of a chip spec.

Every spiking layer (``IntNeuron``) is cut into rectangular blocks, one block per core, so that
every per-core limit of the spec holds; the input (``IntSource``) is not placed: the host injects
its messages, which enter the mesh at tile (0, 0) of chip 0. Cores are then placed on the mesh.

The stages, one module each: ``chains`` (the synapse chains, folded, and the bit-plane
model), ``usage`` (a block's use of every per-core resource), ``partition`` (the cheapest
split of each layer and its lower bound), ``placement`` (cores on the mesh), and ``network``
(the whole mapping).
"""

from backends.hardware.mapping.chains import Connection, connections
from backends.hardware.mapping.network import Core, LayerMapping, Mapping, map_network

__all__ = ["Connection", "Core", "LayerMapping", "Mapping", "connections", "map_network"]
