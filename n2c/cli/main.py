"""The ``n2c`` command: one module per command in this package (``export``, ``convert``,
``simulate``, ``report``, ``inspect``, ``demo``, ``train``), each with its options and the
function that runs it; ``pipeline`` holds the stages they share.

Errors a user can cause, argparse's included, print one line ``n2c: error: ...`` and exit
with code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

# Before torch starts OpenMP: its threads sleep when idle instead of spinning. On a machine
# whose cores are busy with other jobs, spinning threads make each parallel kernel wait for a
# descheduled one (measured here: n2c simulate 6x to 34x slower, the busier the slower); on an idle
# machine the difference is within noise. Set OMP_WAIT_POLICY yourself to choose otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from n2c.cli import convert, demo, export, inspect, report, simulate, sweep, train  # noqa: E402
from n2c.errors import N2CError  # noqa: E402

COMMANDS = (export, convert, simulate, report, inspect, demo, train, sweep)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2 from :func:`main`, as for every bad input)."""

    def error(self, message: str):
        raise N2CError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="n2c", description="Trained PyTorch CNN → one-timestep spiking network → NIR → Lava "
                "(Loihi fixed point), with resource and energy reports.")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Every warning as one line, without source context (a library's names its category)."""
    text = " ".join(str(message).split())
    prefix = "" if category is UserWarning else f"{category.__name__}: "
    print(f"n2c: warning: {prefix}{text}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            warnings.simplefilter("default")
            warnings.simplefilter("ignore", ImportWarning)  # lava-dl's optional-pandas notice
            # NumPy's overflow/invalid-value notices name n2c's internal lines; what they mean for the
            # user (values past Loihi's limits, refused inputs) n2c reports itself
            warnings.simplefilter("ignore", RuntimeWarning)
            code = args.func(args)
    except N2CError as e:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every process fails alike; rank 0 says why
            print(f"n2c: error: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("n2c: interrupted", file=sys.stderr)
        code = 130
    from n2c.distributed import exit_now_if_distributed
    exit_now_if_distributed(code)  # under torchrun only
    return code


if __name__ == "__main__":
    sys.exit(main())
