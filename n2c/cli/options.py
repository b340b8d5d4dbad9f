"""Options shared by the commands: argparse types that validate values, and option groups."""

from __future__ import annotations

import argparse
import math

from n2c.limits import MAX_TIMESTEPS


def shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape; write it as C,H,W, e.g. 1,8,8") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape; write it as C,H,W, e.g. 1,8,8")
    return shape


def positive(cast, what: str, largest: float = math.inf):
    """argparse type: ``cast(text)`` that must be > 0 and at most ``largest``; a float must also be
    a normal number between 1e-30 and 1e30 (no inf, nan or denormals, which no scale means)."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            value = 0
        if not value > 0 or (cast is float and not FLOAT_RANGE[0] <= value <= FLOAT_RANGE[1]):
            bounds = f" between {FLOAT_RANGE[0]:g} and {FLOAT_RANGE[1]:g}" if cast is float else ""
            raise argparse.ArgumentTypeError(f"expected a positive {what}{bounds}, got {text!r}")
        if value > largest:
            raise argparse.ArgumentTypeError(f"expected a positive {what} up to {largest:,}, got {text!r}")
        return value
    return parse


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


FLOAT_RANGE = (1e-30, 1e30)
positive_int = positive(int, "integer")
positive_float = positive(float, "number")
timesteps_int = positive(int, "integer", MAX_TIMESTEPS)


def listed(parse, what: str):
    """argparse type: a comma-separated list of ``parse``'s values."""
    def parse_list(text: str):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected one or more {what}, comma-separated, got {text!r}")
        return [parse(t) for t in items]
    return parse_list


def method_name(text: str) -> str:
    from n2c.snn.convert import METHODS
    if text not in METHODS:
        raise argparse.ArgumentTypeError(f"unknown method {text!r}; use {', '.join(METHODS)}")
    return text


def conversion_options(q, many: bool = False) -> None:
    """How a model becomes an SNN (export, convert; ``many``: sweep, where --method and --timesteps
    take comma-separated lists)."""
    from n2c.snn.convert import CALIBRATION_MODES, MAXPOOL_MODES, METHODS
    q.add_argument("--arch", help="package.module:ClassName of a state_dict's model, optionally with "
                   "keyword arguments: 'n2c.models:DigitsCNN(levels=8)'")
    q.add_argument("--trust-pickle", action="store_true",
                   help="allow loading a whole pickled nn.Module (runs code from the file: only for trusted files)")
    q.add_argument("--device", default="cpu", help="cpu (default) or cuda: where calibration (and convert's "
                   "float evaluation) runs")
    methods = "neurons: if (one spike per step), mtn (multi-threshold, exact at T=1), pmsm (polarity, signed " \
        "quantizers), sfn (scale-and-fire, thresholds from data), parallel (parallel neuron, exact for L=T)"
    if many:
        q.add_argument("--method", type=listed(method_name, "methods"), default=["mtn"],
                       help=f"{methods}; several, comma-separated (default: mtn)")
        q.add_argument("--timesteps", type=listed(timesteps_int, "positive integers"), default=[1],
                       help="timesteps T of the SNN; several, comma-separated, e.g. 1,2,4,8 (default: 1)")
    else:
        q.add_argument("--method", choices=METHODS, default="mtn", help=f"{methods} (default: mtn)")
        q.add_argument("--timesteps", type=timesteps_int, default=1, help="timesteps T of the SNN (default: 1)")
    q.add_argument("--input-mean", type=listed(finite_float, "numbers"), metavar="M[,M...]",
                   help="the model was trained on inputs normalized as (x - mean) / std (torchvision's Normalize): "
                   "the mean per channel (or one for all); with --input-std. The data stays raw; the integer stage "
                   "folds the normalization into the first layers")
    q.add_argument("--input-std", type=listed(finite_float, "numbers"), metavar="S[,S...]",
                   help="the std per channel of that normalization (with --input-mean)")
    q.add_argument("--levels", type=positive_int, help="quantization levels L for calibrated ReLU activations "
                   "(default for if/parallel: T)")
    q.add_argument("--calib", metavar="DATASET", help="calibration data: its training split (digits, "
                   "fashion-mnist, an .npz file or a directory of x.npy, y.npy); needed for ReLU models, sfn and "
                   "DA-QCFS")
    q.add_argument("--calib-samples", type=positive_int, default=4096,
                   help="use the first N calibration samples (default: 4096)")
    q.add_argument("--calib-mode", choices=CALIBRATION_MODES,
                   help="ReLU thresholds: max, percentile, or per channel (default: channel-max for parallel, "
                   "max otherwise)")
    q.add_argument("--percentile", type=positive_float, default=99.9,
                   help="percentile of the percentile modes (default: 99.9)")
    q.add_argument("--maxpool", choices=MAXPOOL_MODES, default="exact",
                   help="MaxPool after an activation: exact (default; a circuit of ReLU neurons, exact on quantized "
                   "values: relu(a - b) + b), avg (replace by AvgPool2d, warn) or error")
    q.add_argument("--v-init", type=finite_float, default=0.5,
                   help="initial membrane potential as a fraction of θ (default: 0.5, the optimal one)")
    q.add_argument("--sfn-scale", type=positive_float, default=1.0,
                   help="sfn: scale factor of the thresholds (default: 1, nearest level)")
    q.add_argument("--da", action=argparse.BooleanOptionalAction, default=None,
                   help="parallel: DA-QCFS calibration (default: on for ReLU models, off for QCFS models)")


def input_normalized(model, args):
    """``model`` fed (x − mean)/std when ``--input-mean/--input-std`` ask for it."""
    if args.input_mean is None and args.input_std is None:
        return model
    if args.input_mean is None or args.input_std is None:
        from n2c.errors import N2CError
        raise N2CError("--input-mean and --input-std go together: give both (torchvision's Normalize constants)")
    from n2c.ingest.normalization import Normalized
    return Normalized(model, args.input_mean, args.input_std)


def data_options(q) -> None:
    """Which graph and data (simulate, report)."""
    q.add_argument("graph", help="NIR file (written by n2c export or by another tool)")
    q.add_argument("--dataset", help="digits (default), fashion-mnist, an .npz file, or a directory of x.npy, y.npy "
                   "(memory-mapped)")
    q.add_argument("--split", choices=["train", "test"], default="test", help="data split (default: test)")
    q.add_argument("--samples", type=positive_int, help="use only the first N samples")
    q.add_argument("--input-scale", type=positive_float, help="override the graph's input scale")

