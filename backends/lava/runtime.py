"""Lava's runtime, imported before anything else of Lava.

Lava calls ``multiprocessing.set_start_method('fork')`` when its runtime is first
imported and fails if the start method was already fixed, which any earlier use of
multiprocessing does (tqdm's progress-bar lock, for one). On the fork platforms Lava
supports, clearing the still-default method and importing Lava's runtime here, before
any other Lava module, lets Lava set the same method once.
"""

import multiprocessing as _mp
import sys as _sys

if "lava.magma.runtime.message_infrastructure.multiprocessing" not in _sys.modules and \
        _mp.get_start_method(allow_none=True) == "fork":
    _mp.set_start_method(None, force=True)

import lava.magma.runtime.runtime  # noqa: E402,F401  (sets the start method; see above)
