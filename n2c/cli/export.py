"""``n2c export``: a model (or a saved SNN) to NIR, or a NIR graph to a lava-dl netx file."""

from __future__ import annotations

from n2c.cli.options import conversion_options, input_normalized, positive_float, shape
from n2c.errors import N2CError
from n2c.files import check_output_file


def add_parser(sub) -> None:
    e = sub.add_parser("export", help="convert a trained model (or take a converted SNN) and write it as NIR; "
                       "or write a NIR graph as a lava-dl netx file",
                       description="Convert a trained model into a spiking network, or take an SNN saved by "
                       "n2c convert, and write it as a NIR file. With --to netx, write a NIR graph of IF/LIF/CubaLIF "
                       "layers as a lava-dl netx HDF5 file for Loihi 2 (docs/netx.md).")
    e.add_argument("model", help="TorchScript file, torch.export .pt2 file, state_dict (with --arch), "
                   "pickled nn.Module (with --trust-pickle), or an SNN file written by n2c convert; with "
                   "--to netx a NIR file")
    e.add_argument("--to", choices=["nir", "netx"], default="nir", help="output format: nir (default), or netx: "
                   "a NIR graph of IF/LIF/CubaLIF layers as a lava-dl netx HDF5 file for Loihi 2 (docs/netx.md)")
    e.add_argument("--dt", type=positive_float, help="--to netx: time step of NIR's neurons (default: the "
                   "graph's n2c.dt, else 1e-3)")
    e.add_argument("-o", "--output", required=True, help="output file, e.g. model.nir")
    conversion_options(e)
    e.add_argument("--dataset", help="data set the model was trained on (gives input shape and scale)")
    e.add_argument("--input-shape", type=shape, help="input shape C,H,W without batch, e.g. 1,8,8")
    e.add_argument("--input-scale", type=positive_float,
                   help="real value of one integer input step (e.g. 0.0625 for digits' 0..16 pixels)")
    e.add_argument("--nested", action="store_true", help="write each top-level submodule of the model "
                   "(e.g. a residual block) as a nested NIR graph")
    e.add_argument("--portable", action="store_true", help="standard NIR only (T = 1, mtn/pmsm): every "
                   "multi-level neuron as binary LIF neurons with staggered thresholds, runnable in any NIR tool")
    e.set_defaults(func=cmd_export)


def convert_from_args(args, model, with_ann: bool = False):
    """Convert ``model`` with the conversion options of ``export`` / ``convert``; ``with_ann``:
    return (the quantized ANN converted, the SNN)."""
    from n2c.snn.convert import convert_with_ann
    from n2c.data import load_dataset

    calib = load_dataset(args.calib, "train").head(args.calib_samples) if args.calib else None
    from n2c.distributed import resolve_device

    ann, snn = convert_with_ann(model, args.method, args.timesteps, calib=calib, levels=args.levels,
                                calib_mode=args.calib_mode, percentile=args.percentile, maxpool=args.maxpool,
                                v_init=args.v_init, sfn_scale=args.sfn_scale, da=args.da,
                                device=resolve_device(getattr(args, "device", None)))
    return (ann, snn) if with_ann else snn


def load_model_or_snn(args):
    """A saved SNN (from n2c convert) as it is, or a model file converted with the options."""
    from n2c.ingest import load_model
    from n2c.snn.io import is_snn_file, load_snn

    if is_snn_file(args.model):
        if args.input_mean is not None or args.input_std is not None:
            from n2c.errors import N2CError
            raise N2CError(f"{args.model} is a converted SNN; give --input-mean/--input-std to n2c convert instead")
        return load_snn(args.model)
    model = input_normalized(load_model(args.model, arch=args.arch, trust_pickle=args.trust_pickle), args)
    return convert_from_args(args, model)


def _export_netx(args) -> int:
    """``n2c export GRAPH.nir --to netx``: a NIR graph of IF/LIF/CubaLIF layers as a lava-dl netx
    HDF5 file (``backends.lava.netx``, docs/netx.md)."""
    import os

    import h5py

    from backends.lava.netx import RESET_OFFSET, export_netx
    from backends.nir.to_layers import import_nir

    for flag, given in (("--portable", args.portable), ("--nested", args.nested), ("--dataset", args.dataset),
                        ("--input-shape", args.input_shape)):
        if given:
            raise N2CError(f"{flag} does not apply to --to netx, which writes an existing NIR graph; drop it")
    if os.path.isfile(args.model) and not h5py.is_hdf5(args.model):
        raise N2CError(f"{args.model} is not a NIR file; --to netx reads a NIR graph (write one with "
                       "n2c export MODEL -o model.nir, or take another tool's)")
    check_output_file(args.output)
    model = export_netx(import_nir(args.model, isolate=True), args.output, args.input_scale, args.dt)
    readout = {"spikes": f"the last layer's spikes (n2c readout = {model.readout_weight} x spike count)",
               "potential-sum": f"the last layer's v (n2c readout = {model.readout_weight} x sum of v over the "
                                "sample)",
               "potential": "the last layer's v (n2c readout = v / 64 at the sample's last step)"}[model.readout]
    print(f"wrote {args.output}: lava-dl netx, {len(model.blocks)} layers "
          f"({', '.join(layer.type for layer in model.blocks)}), output {readout}; load it with "
          f"netx.hdf5.Network(net_config='{args.output}', reset_interval=T, reset_offset={RESET_OFFSET}, "
          f"input_message_bits={model.input_message_bits}) (T: steps per sample)")
    if any(layer.type == "dense_rec" for layer in model.blocks):
        print("dense_rec: netx does not reset a loop's buffer between samples; run one sample per stream to get "
              "n2c's integers (docs/netx.md, Recurrent layers)")
    if model.bias_rounding:
        layer, change = max(model.bias_rounding.items(), key=lambda kv: kv[1])
        print(f"biases rounded to multiples of 64 integer units (netx fixes bias_exp = 6): largest change "
              f"{change:.3g} units, in layer '{layer}'; the file computes that integer network exactly")
    return 0


def cmd_export(args) -> int:
    from n2c.data import load_dataset
    from n2c.cli.pipeline import export_model

    if args.to == "netx":
        return _export_netx(args)
    if args.dt:
        raise N2CError("--dt applies to --to netx only (the time step of a NIR graph's neurons); drop it")
    snn = load_model_or_snn(args)
    data = load_dataset(args.dataset, "test") if args.dataset else None
    # training samples: the input shape when nothing else gives it, and the currents to measure
    train = load_dataset(args.calib or args.dataset, "train").head(args.calib_samples) \
        if (args.calib or args.dataset) else None
    shape = args.input_shape or (tuple(data.x.shape[1:]) if data is not None else None)
    if shape is None and train is not None:
        shape = tuple(train.x.shape[1:])
    if shape is None:
        raise N2CError("the input shape is unknown; pass --input-shape C,H,W or --dataset NAME")
    scale = args.input_scale or (data.input_scale if data is not None else None)
    if args.portable and args.nested:
        raise N2CError("--portable writes a flat graph; drop --nested")
    width = train.x if train is not None else None
    if width is not None and tuple(width.shape[1:]) != tuple(shape):
        width = None  # data of another shape: no currents to measure (the shape error comes from elsewhere)
    export_model(snn, args.output, shape, scale, portable=args.portable, nested=args.nested, width_data=width)
    form = "portable standard NIR (LIF populations, T = 1)" if args.portable else "n2c NIR"
    print(f"wrote {args.output}: {form}, {len(snn.neurons())} spiking layers, method {snn.method}, "
          f"T = {snn.timesteps}, input {shape}")
    return 0
