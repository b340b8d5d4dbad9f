"""``n2c train``: fine-tune a model into a QCFS network, or train a reference network."""

from __future__ import annotations

import sys

from n2c.cli.options import positive_float, positive_int
from n2c.errors import N2CError
from n2c.files import check_output_file


def add_parser(sub) -> None:
    t = sub.add_parser("train", help="train or fine-tune a network with quantized (QCFS) activations",
                       description="Fine-tune a trained ReLU model into a QCFS model that converts to a one-step "
                       "SNN without loss, or train a reference network (--model-name) from scratch. Writes a "
                       "TorchScript file that n2c export reads.")
    t.add_argument("model", nargs="?", help="a trained model file to fine-tune (TorchScript, .pt2, state_dict "
                   "with --arch, or pickled nn.Module with --trust-pickle)")
    t.add_argument("--arch", help="package.module:ClassName(k=v) of MODEL's state_dict, or without MODEL a "
                   "class to train from scratch")
    t.add_argument("--model-name", help="train a reference network from scratch: digits-cnn, vgg, resnet or vit "
                   "(a small vision transformer)")
    t.add_argument("--attention", choices=["sasa", "softmax"],
                   help="attention of a vision transformer (--model-name vit, or a torchvision or timm ViT as MODEL): "
                   "spike-aggregated, without softmax (sasa, default: it fine-tunes best) or a quantized softmax "
                   "(softmax, run off the neuro cores)")
    t.add_argument("--dataset", required=True, help="digits, fashion-mnist, an .npz file with x (N,C,H,W), y, or a "
                   "directory of x.npy, y.npy (memory-mapped: data larger than memory)")
    t.add_argument("--levels", type=positive_int, default=8, help="quantization levels L of the activations replacing "
                   "ReLU (default: 8; quantizers already in MODEL keep theirs)")
    t.add_argument("--quantizer", "--act", dest="quantizer", choices=["qcfs", "signed"], default="qcfs",
                   help="activation replacing ReLU: qcfs (0..L levels) or signed (-L..L) (default: qcfs)")
    t.add_argument("--epochs", type=positive_int, help="training epochs (default: 5 fine-tuning, 20 from scratch)")
    t.add_argument("--lr", type=positive_float, help="peak learning rate, cosine decay (default: 1e-3 fine-tuning, "
                   "1e-2 from scratch)")
    t.add_argument("--batch-size", type=positive_int, default=64, help="batch size (default: 64); under torchrun "
                   "the global batch, split evenly over the processes")
    t.add_argument("--optimizer", choices=["adam", "sgd"], default="adam", help="optimizer (default: adam)")
    t.add_argument("--width", type=positive_int, help="base channels of --model-name (default: 16)")
    t.add_argument("--samples", type=positive_int, help="train on only the first N training samples")
    t.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    t.add_argument("--from-scratch", action="store_true",
                   help="re-initialise MODEL's weights and train from scratch (implied without MODEL)")
    t.add_argument("--integer", action="store_true",
                   help="integer-exact fine-tuning: MODEL is a one-step NIR graph (n2c export --method mtn "
                   "--timesteps 1); train its integer network in the chip's weight format and write a NIR graph "
                   "whose integer network predicts exactly what the trained model predicts")
    t.add_argument("--hardware", default="loihi2", help="with --integer: the chip whose integer widths to train "
                   "in: loihi1, loihi2 (default) or a chip spec file")
    t.add_argument("-o", "--output", required=True, help="output TorchScript file, e.g. model_qcfs.pt (with "
                   "--integer: a .nir file)")
    t.add_argument("--device", default="cpu", help="cpu (default) or cuda: where training and calibration run "
                   "(under torchrun each process takes the GPU of its LOCAL_RANK)")
    t.add_argument("--trust-pickle", action="store_true",
                   help="allow loading a whole pickled nn.Module (runs code from the file: only for trusted files)")
    t.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    if args.integer:
        return train_integer(args)
    from n2c.distributed import check_global_batch, setup, shutdown
    from n2c.models import MODEL_NAMES

    if args.model_name is not None and args.model_name not in MODEL_NAMES:
        raise N2CError(f"unknown model name {args.model_name!r}; use one of {', '.join(MODEL_NAMES)} "
                       "(or --arch package.module:ClassName for your own)")
    if args.model_name and (args.model or args.arch):
        raise N2CError("--model-name builds a new reference network; drop it to fine-tune MODEL or train --arch")
    if not (args.model or args.model_name or args.arch):
        raise N2CError("nothing to train; pass MODEL (a trained model file), --model-name "
                       f"{'|'.join(MODEL_NAMES)}, or --arch package.module:ClassName")
    check_output_file(args.output)
    world = setup(args.device)  # under torchrun: this process's rank, its device, the process group
    check_global_batch(args.batch_size, world)  # before anything is loaded
    code = _train(args, world)
    shutdown(world)
    return code


def _train(args, world) -> int:
    import numpy as np
    import torch

    from n2c.ann.train import evaluate, fine_tune, has_relu, save_checkpoint
    from n2c.data import training_and_evaluation
    from n2c.ingest import instantiate_arch, load_model
    from n2c.models import build_model

    def say(*a, **k):  # rank 0 speaks for all processes
        if world.main:
            print(*a, **k)

    train_set, test_set, evaluated = training_and_evaluation(args.dataset, args.samples)
    shape = tuple(train_set.x.shape[1:])
    from_scratch = args.from_scratch or not args.model
    torch.manual_seed(args.seed)
    if args.model:
        model = load_model(args.model, arch=args.arch, trust_pickle=args.trust_pickle)
        if args.from_scratch:
            for m in model.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
    elif args.arch:
        model = instantiate_arch(args.arch)
    else:
        model = build_model(args.model_name, shape, train_set.num_classes, act=args.quantizer,
                            levels=args.levels, width=args.width, attention=args.attention or "sasa")
    model = _spiking_transformer(model, shape[0], args, say)
    try:
        with torch.no_grad():
            out = model.eval()(torch.from_numpy(np.array(train_set.x[:2])))
    except Exception as e:
        raise N2CError(f"the model does not accept {train_set.name} samples of shape {shape} "
                       f"({' '.join(str(e).split())[:160]}); train on the data set it was built for") from None
    if out.dim() != 2 or out.shape[1] < train_set.num_classes:
        raise N2CError(f"the model outputs shape {tuple(out.shape[1:])} per sample but {train_set.name} has "
                       f"{train_set.num_classes} classes; use a model with one output per class")

    if args.quantizer == "signed" and not from_scratch and has_relu(model):
        # docs/results/signed_quantizers.md: -2.5 to -22.8 points on digits and Fashion-MNIST
        say("n2c: warning: signed quantizers in place of trained ReLUs let through the negative values the "
              "weights were trained to drop, and lose accuracy; for PMSM train with --quantizer signed "
              "--from-scratch (then as accurate as QCFS trained the same way)", file=sys.stderr)
    epochs = args.epochs or (20 if from_scratch else 5)
    lr = args.lr or (1e-2 if from_scratch else 1e-3)
    where = f" on {world.device}" + (f", {world.size} processes" if world.distributed else "")
    say(f"{'training' if from_scratch else 'fine-tuning'} on {len(train_set)} {train_set.name} samples{where}: "
        f"{args.quantizer} L = {args.levels}, {epochs} epochs, lr {lr:g}, batch {args.batch_size}", file=sys.stderr)
    model = fine_tune(model, train_set, levels=args.levels, quantizer=args.quantizer, epochs=epochs, lr=lr,
                      batch_size=args.batch_size, seed=args.seed, val_data=test_set, optimizer=args.optimizer,
                      world=world)
    train_acc, test_acc = evaluate(model, train_set, world), evaluate(model, test_set, world)
    if world.main:  # one writer; the others wait until the file is complete
        save_checkpoint(model, args.output, shape)
    world.barrier()
    say(f"train accuracy {100 * train_acc:.2f} %, {evaluated} accuracy {100 * test_acc:.2f} % "
        f"({train_set.name}, {args.quantizer} L = {args.levels})")
    hint = f"n2c export {args.output} -o model.nir --dataset {args.dataset}"
    if args.quantizer == "signed":
        hint += " --method pmsm"  # signed quantizers need negative spikes
    say(f"wrote {args.output} (TorchScript); convert it with: {hint}")
    return 0


def _spiking_transformer(model, channels: int, args, say=print):
    """A torchvision or timm VisionTransformer as n2c's SpikingViT (``n2c.ingest.vit``), else ``model``."""
    from n2c.ingest.vit import recognize, to_spiking_vit

    kind = recognize(model)
    if kind is None:
        return model
    attention = args.attention or "sasa"  # digits, torchvision ViT: sasa 93 %, softmax 65-85 % after fine-tuning
    say(f"n2c: a {kind} VisionTransformer: LayerNorm folded into the projections (BatchNorm after them), GELU "
          f"replaced by the {args.quantizer} quantizer, {attention} attention on spike counts, the class token and "
          "position table replaced by the mean token and a depthwise positional convolution; fine-tuning restores "
          "the accuracy", file=sys.stderr)
    return to_spiking_vit(model, channels, act=args.quantizer, levels=args.levels, attention=attention)


def train_integer(args) -> int:
    """``n2c train GRAPH.nir --integer``: fine-tune the integer network itself (``backends.integer_training``)."""
    import os

    import numpy as np

    from backends.hardware.spec import load_chip
    from backends.nir.read import read_graph
    from backends.nir.to_layers import import_nir
    from backends.quantize import quantize
    from backends.reference.simulate import predict
    from backends.integer_training import IntegerModel, fine_tune_integer, predict_integer, trainable_parts, write_nir
    from n2c.data import training_and_evaluation

    for flag in ("arch", "model_name", "from_scratch", "trust_pickle"):
        if getattr(args, flag):
            raise N2CError(f"--integer trains a NIR graph's integer network; drop --{flag.replace('_', '-')}")
    if not args.model or not os.path.isfile(args.model):
        raise N2CError("--integer needs MODEL, a one-step NIR graph written by n2c export (--method mtn "
                       "--timesteps 1)")
    check_output_file(args.output)
    chip = load_chip(args.hardware)
    nir_graph = read_graph(args.model)
    graph = import_nir(nir_graph)
    train_set, test_set, evaluated = training_and_evaluation(args.dataset, args.samples)
    net = quantize(graph, graph.input.input_scale or train_set.input_scale, fmt=chip.integer_format())
    if tuple(train_set.x.shape[1:]) != tuple(net.source.shape):
        raise N2CError(f"{train_set.name} has samples of shape {tuple(train_set.x.shape[1:])} but {args.model} "
                       f"expects {tuple(net.source.shape)}; use the data set the network was trained on")
    weights, biases = trainable_parts(nir_graph, net)
    model = IntegerModel(net, weights, biases)
    s_train, s_test = net.source.encode(train_set.x), net.source.encode(test_set.x)
    before = float(np.mean(predict_integer(model, s_test) == test_set.y))
    epochs, lr = args.epochs or 2, args.lr or 0.05
    print(f"integer fine-tuning on {len(train_set)} {train_set.name} samples in {chip.name}'s format "
          f"({net.fmt.weight_bits}-bit weights): {len(weights)} weighted layers, {len(biases)} biases, {epochs} "
          f"epochs, lr {lr:g} (integer units), batch {args.batch_size}", file=sys.stderr)
    fine_tune_integer(model, s_train, train_set.y, epochs=epochs, lr=lr, batch_size=args.batch_size, seed=args.seed,
                      progress=sys.stderr.isatty())
    trained = predict_integer(model, s_test)
    write_nir(nir_graph, model.to_network(), args.output)  # checks the round trip before writing
    integer = predict(quantize(import_nir(args.output), fmt=chip.integer_format()), test_set.x)
    same = int(np.sum(integer == trained))
    print(f"{evaluated} accuracy of the integer network {100 * before:.2f} % -> "
          f"{100 * np.mean(trained == test_set.y):.2f} %; the integer network of {args.output} predicts what the "
          f"trained model predicts on {same}/{len(trained)} of those samples")
    if same != len(trained):
        raise N2CError(f"the written graph's integer network differs from the trained model on "
                       f"{len(trained) - same} samples (a wrapped or saturated sum); please report it")
    print(f"wrote {args.output} (NIR, scales pinned); run it with: n2c simulate {args.output} --backend lava")
    return 0
