"""Map a quantized network onto the cores and chips of a chip spec.

Map a quantized network onto the cores and chips of a chip spec.

Every spiking layer (``IntNeuron``) is cut into rectangular blocks so that every per-core limit
of the spec holds for each block; blocks then share cores wherever their summed uses still fit.
The input (``IntSource``) is not placed: the host injects its messages, which enter the mesh
at tile (0, 0) of chip 0. Cores are then placed on the mesh.

The stages, one module each: ``chains`` (the synapse chains, folded, and the bit-plane
model), ``usage`` (a block's use of every per-core resource), ``partition`` (the cheapest
cut of each layer), ``bound`` (lower bounds on cores), ``placement`` (cores on the mesh),
and ``network`` (the whole mapping: blocks, shared cores, placement).
"""

from backends.hardware.mapping.chains import Connection, connections
from backends.hardware.mapping.network import Block, Core, LayerMapping, Mapping, map_network

__all__ = ["Block", "Connection", "Core", "LayerMapping", "Mapping", "connections", "map_network"]
