"""Lava backend: lowering of the integer IR to lava-nc Processes (``lower.py``, ``neurons.py``),
n2c's custom neuron Processes (``processes/``), the lava-dl netx export (``netx.py``) and Lava's
data layout (``layout.py``). Only ``lower``, ``neurons``' Process builders and ``processes``
import Lava; ``runtime`` does the one-time set-up Lava needs first.
"""
