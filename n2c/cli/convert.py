"""``n2c convert``: a trained model to a spiking network, saved as TorchScript."""

from __future__ import annotations

from n2c.files import check_output_file
from n2c.cli.options import conversion_options, input_normalized, positive_int
from n2c.cli.export import convert_from_args


def add_parser(sub) -> None:
    c = sub.add_parser("convert", help="convert a trained model into a spiking network (saved as TorchScript)",
                       description="Convert a trained model with one of the methods and save the SNN as a "
                       "TorchScript file: torch.jit.load(file)(x) runs it, n2c export writes it as NIR.")
    c.add_argument("model", help="TorchScript file, torch.export .pt2 file, state_dict (with --arch), "
                   "or pickled nn.Module (with --trust-pickle)")
    c.add_argument("-o", "--output", required=True, help="output file, e.g. snn.pt")
    conversion_options(c)
    c.add_argument("--dataset", help="report ANN and SNN accuracy on this data set's test split")
    c.add_argument("--samples", type=positive_int, help="evaluate on the first N test samples only")
    c.set_defaults(func=cmd_convert)


def cmd_convert(args) -> int:
    from n2c.data import load_dataset
    from n2c.ingest import load_model
    from n2c.snn.io import save_snn
    from n2c.ann.train import accuracy, predict

    check_output_file(args.output)
    model = input_normalized(load_model(args.model, arch=args.arch, trust_pickle=args.trust_pickle), args)
    quantized, snn = convert_from_args(args, model, with_ann=True)
    if args.dataset:
        from n2c.distributed import resolve_device

        device = resolve_device(args.device)  # the float ANN and SNN run there (the SNN is saved from the CPU)
        test = load_dataset(args.dataset, "test").head(args.samples)
        batch = max(8, 4096 // snn.timesteps)
        ann = accuracy(predict(model.to(device), test.x), test.y)
        converted = accuracy(predict(quantized.to(device), test.x), test.y)
        acc = accuracy(predict(snn.to(device), test.x, batch_size=batch), test.y)
        snn.cpu()
        # the quantized ANN is what the SNN converts (QCFS levels, --maxpool avg): the SNN's loss is against it
        print(f"accuracy on {len(test)} {test.name} test samples: ANN as given {100 * ann:.2f} %, quantized ANN "
              f"converted {100 * converted:.2f} %, SNN ({args.method}, T = {snn.timesteps}, torch float) "
              f"{100 * acc:.2f} %")
    save_snn(snn, args.output)
    print(f"wrote {args.output}: {len(snn.neurons())} spiking layers, method {args.method}, T = {snn.timesteps}; "
          f"export it with: n2c export {args.output} -o model.nir --dataset {args.dataset or 'NAME'}")
    return 0
