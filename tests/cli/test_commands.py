"""The command line: every subcommand end to end, and every bad input a user can give."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys

import pytest
import torch

from n2c.cli.main import main
from n2c.models import DigitsCNN
from tests.models_for_tests import MaxPoolNet

ARCH = "n2c.models:DigitsCNN(levels=8)"


def run_cli(*args, cwd=None):
    """Run the real console entry point in a subprocess (exit codes, stderr, no traceback)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "n2c", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


@pytest.mark.parametrize("command", ["export", "simulate", "report", "demo"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: n2c " + command in capsys.readouterr().out


def test_export_state_dict_with_arch_then_simulate_json(digits_checkpoint, tmp_path, capsys):
    out = tmp_path / "m.nir"
    assert main(["export", str(digits_checkpoint), "--to", "nir", "-o", str(out), "--arch", ARCH,
                 "--dataset", "digits"]) == 0
    assert out.exists()
    capsys.readouterr()
    assert main(["simulate", str(out), "--backend", "reference", "--samples", "50", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"backend", "samples", "accuracy", "predictions", "samples_per_second"} <= set(result)
    assert result["samples"] == 50 and len(result["predictions"]) == 50 and result["accuracy"] > 0.9
    assert set(result["spikes_per_layer"]) == {"features_1", "features_4", "classifier_2"}


def test_export_of_relu_model_needs_calibration(tmp_path, capsys):
    ckpt = tmp_path / "relu.pt"
    torch.save(DigitsCNN(levels=None).state_dict(), ckpt)
    out = tmp_path / "relu.nir"
    assert main(["export", str(ckpt), "-o", str(out), "--arch", "n2c.models:DigitsCNN(levels=None)",
                 "--dataset", "digits"]) == 2
    assert "--calib" in capsys.readouterr().err and not out.exists()
    assert main(["export", str(ckpt), "-o", str(out), "--arch", "n2c.models:DigitsCNN(levels=None)",
                 "--calib", "digits", "--levels", "8"]) == 0
    assert out.exists()


def test_convert_prints_the_accuracy_of_the_ann_it_converted(tmp_path, capsys):
    """The quantized ANN (QCFS levels, a MaxPool swapped by --maxpool avg) is what the SNN converts:
    its accuracy is printed beside the model's own, so that swap does not pass for a conversion loss."""
    ckpt = tmp_path / "relu.pt"
    torch.save(MaxPoolNet().state_dict(), ckpt)
    arch = "tests.models_for_tests:MaxPoolNet()"
    assert main(["convert", str(ckpt), "--arch", arch, "--calib", "digits", "--levels", "2", "--maxpool", "avg",
                 "--dataset", "digits", "--samples", "60", "-o", str(tmp_path / "snn.pt")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("accuracy on 60"))
    numbers = [float(v) for v in re.findall(r"(\d+\.\d+) %", line)]
    assert "ANN as given" in line and "quantized ANN converted" in line and len(numbers) == 3
    assert numbers[1] == numbers[2]  # mtn at T = 1 equals the quantized ANN


def test_report_writes_json_markdown_and_html(digits_nir, tmp_path):
    assert main(["report", str(digits_nir), "--hardware", "loihi2", "--dataset", "digits", "--samples", "40",
                 "-o", str(tmp_path / "rep")]) == 0
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["report_version"] == 2 and report["data"]["samples"] == 40
    assert report["hardware"]["key"] == "loihi2" and report["energy"]["total"] > report["energy"]["dynamic"] > 0
    assert all(q["source"] and q["tag"] for q in report["hardware"]["values"].values())
    assert [row["neurons"] for row in report["activity"]["layers"] if row["kind"] == "mtn"] == [1024, 512, 64]
    assert "## Summary" in (tmp_path / "rep" / "report.md").read_text()
    assert "data:image/png;base64," in (tmp_path / "rep" / "report.html").read_text()


def test_report_shares_cores_when_asked(digits_nir, tmp_path):
    """--share-cores always packs the digits network's 4 blocks onto one Loihi 2 core; the
    report says so, and the shared core's steps take the work of all its blocks."""
    reports = {}
    for mode in ("never", "always"):
        assert main(["report", str(digits_nir), "--samples", "20", "--share-cores", mode,
                     "-o", str(tmp_path / mode)]) == 0
        reports[mode] = json.loads((tmp_path / mode / "report.json").read_text())
    never, always = (reports[k]["mapping"] for k in ("never", "always"))
    assert (never["cores"], never["blocks"], always["cores"], always["blocks"]) == (4, 4, 1, 4)
    assert always["shared_cores"] == 1 and always["lower_bound"] == always["lower_bound_shared"] == 1
    assert never["lower_bound"] == never["lower_bound_unshared"] == 4
    assert reports["always"]["latency"]["step_s_mean"] > reports["never"]["latency"]["step_s_mean"]
    assert "cores shared by several layers" in (tmp_path / "always" / "report.md").read_text()
    assert run_cli("report", digits_nir, "--share-cores", "some", "-o", tmp_path / "x").returncode == 2


def test_pickled_model_is_refused_without_trust(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(DigitsCNN(levels=8), path)
    out = tmp_path / "o.nir"
    r = run_cli("export", path, "-o", out, "--dataset", "digits")
    assert r.returncode == 2 and "--trust-pickle" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1 and not out.exists()
    r = run_cli("export", path, "-o", out, "--dataset", "digits", "--trust-pickle")
    assert r.returncode == 0, r.stderr
    assert out.exists()


BAD_INPUTS = [
    (["export", "{tmp}/missing.pt", "-o", "{tmp}/o.nir", "--dataset", "digits"], "does not exist"),
    (["export", "{tmp}/garbage.pt", "-o", "{tmp}/o.nir", "--dataset", "digits"], ""),
    (["export", "{tmp}/sigmoid.pt", "-o", "{tmp}/o.nir", "--arch", "tests.models_for_tests:SigmoidNet",
      "--dataset", "digits"], "Sigmoid"),
    (["export", "{tmp}/sd.pt", "-o", "{tmp}/o.nir", "--dataset", "digits"], "--arch"),
    (["export", "{tmp}/sd.pt", "-o", "{tmp}/o.nir", "--arch", ARCH], "--input-shape"),
    (["simulate", "{tmp}/missing.nir"], "does not exist"),
    (["simulate", "{tmp}/garbage.pt"], "not a readable NIR file"),
    (["simulate", "{tmp}/o8.nir", "--dataset", "nosuchdata"], "unknown data set"),
    (["simulate", "{tmp}/o8.nir", "--dataset", "{tmp}/wrongshape.npz"], "expects (1, 8, 8)"),
    (["report", "{tmp}/missing.nir", "-o", "{tmp}/rep"], "does not exist"),
]


@pytest.fixture(scope="module")
def bad_input_dir(tmp_path_factory, digits_checkpoint, digits_nir):
    import numpy as np
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "garbage.pt").write_bytes(b"\x00not a model at all")
    torch.save(torch.load(digits_checkpoint), tmp / "sd.pt")
    from tests.models_for_tests import SigmoidNet
    torch.save(SigmoidNet().state_dict(), tmp / "sigmoid.pt")
    (tmp / "o8.nir").write_bytes(digits_nir.read_bytes())
    np.savez(tmp / "wrongshape.npz", x=np.zeros((4, 1, 5, 5), np.float32), y=np.zeros(4, np.int64))
    return tmp


@pytest.mark.parametrize("args,message", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_no_output(args, message, bad_input_dir):
    tmp = bad_input_dir
    before = set(p.name for p in tmp.iterdir())
    r = run_cli(*[a.format(tmp=tmp) for a in args], cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("n2c: error:"), r.stderr
    assert message in lines[0]
    assert set(p.name for p in tmp.iterdir()) == before  # no partial output


def test_graph_without_input_scale_takes_the_datasets(digits_nir, tmp_path, capsys):
    import nir
    graph = nir.read(str(digits_nir))
    graph.metadata.pop("n2c.input_scale")
    graph.nodes["input"].metadata = {}
    path = tmp_path / "noscale.nir"
    nir.write(str(path), graph)
    assert main(["simulate", str(path), "--samples", "30", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.9


@pytest.mark.parametrize("given,expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_command_lets_torch_threads_sleep_unless_told_otherwise(given, expected):
    """OpenMP threads that spin wait for descheduled ones on a busy machine: the n2c command sets
    OMP_WAIT_POLICY=PASSIVE before torch starts, unless the user chose a policy."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    out = subprocess.run([sys.executable, "-c", "import n2c.cli.main, os; print(os.environ['OMP_WAIT_POLICY'])"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def _sinabs_like_if_graph(path):
    """Sinabs' convention: IF neurons stepped with dt = 1 (r = 1, threshold 1). At NIR's default
    dt = 1e-3 each step adds a thousandth of the input: nothing ever fires."""
    import nir
    import numpy as np
    rng = np.random.default_rng(0)
    nodes = {"input": nir.Input(input_type={"input": np.array([6])}),
             "fc": nir.Affine(weight=rng.uniform(0.2, 0.6, (5, 6)), bias=np.zeros(5)),
             "if": nir.IF(r=np.ones(5), v_threshold=np.ones(5)),
             "out": nir.Affine(weight=rng.uniform(-1, 1, (3, 5)), bias=np.zeros(3)),
             "li": nir.LI(tau=np.full(3, 5.0), r=np.ones(3), v_leak=np.zeros(3)),
             "output": nir.Output(output_type={"output": np.array([3])})}
    nir.write(str(path), nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "if"), ("if", "out"),
                                                          ("out", "li"), ("li", "output")]))


def test_report_takes_an_input_array_and_dt_and_says_when_nothing_spikes(tmp_path, capsys):
    import numpy as np
    _sinabs_like_if_graph(tmp_path / "g.nir")
    np.save(tmp_path / "x.npy", np.random.default_rng(1).integers(0, 2, (10, 4, 6)).astype(np.float32))
    common = ["report", str(tmp_path / "g.nir"), "--input", str(tmp_path / "x.npy"), "--input-scale", "1"]
    assert main([*common, "-o", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "sent no spike in the whole run (if)" in err and "--dt 1" in err
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["timesteps"] == 10 and report["data"]["samples"] == 4 and report["warnings"]
    assert main([*common, "--dt", "1", "-o", str(tmp_path / "b")]) == 0
    assert "no spike" not in capsys.readouterr().err
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["warnings"] == [] and report["accuracy"] is None
    spikes = {r["name"]: r["unit_spikes"] for r in report["activity"]["layers"]}
    assert spikes["if"] > 0


def test_report_runs_other_tools_neurons_with_snntorchs_reset(tmp_path, capsys):
    """``--dynamics snntorch``: the spiking layer becomes the integer kind lif_subtract (reset by
    subtraction, a step late), which keeps the charge over θ that a reset to 0 drops."""
    import numpy as np
    _sinabs_like_if_graph(tmp_path / "g.nir")
    np.save(tmp_path / "x.npy", np.random.default_rng(1).integers(0, 2, (10, 4, 6)).astype(np.float32))
    common = ["report", str(tmp_path / "g.nir"), "--input", str(tmp_path / "x.npy"), "--input-scale", "1", "--dt", "1"]
    layers = {}
    for dynamics in ("nir", "snntorch"):
        assert main([*common, "--dynamics", dynamics, "-o", str(tmp_path / dynamics)]) == 0
        report = json.loads((tmp_path / dynamics / "report.json").read_text())
        layers[dynamics] = {r["name"]: r for r in report["activity"]["layers"]}
    capsys.readouterr()
    assert (layers["nir"]["if"]["kind"], layers["snntorch"]["if"]["kind"]) == ("lif", "lif_subtract")
    assert layers["snntorch"]["if"]["unit_spikes"] > layers["nir"]["if"]["unit_spikes"] > 0
    assert main([*common, "--dynamics", "norse", "-o", str(tmp_path / "n")]) == 2  # no integer form: refused
    assert "invalid choice: 'norse'" in capsys.readouterr().err


def test_simulate_warns_when_a_layer_never_spikes(tmp_path, capsys):
    import numpy as np
    _sinabs_like_if_graph(tmp_path / "g.nir")
    np.save(tmp_path / "x.npy", np.random.default_rng(1).integers(0, 2, (10, 4, 6)).astype(np.float32))
    assert main(["simulate", str(tmp_path / "g.nir"), "--input", str(tmp_path / "x.npy"), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert any("sent no spike" in w for w in result["warnings"]) and "sent no spike" in captured.err
    assert main(["simulate", str(tmp_path / "g.nir"), "--input", str(tmp_path / "x.npy"), "--dt", "1",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == []


@pytest.mark.slow
def test_lava_backend_on_another_tools_graph_runs_integers_without_being_told(tmp_path, capsys):
    """The precision follows the backend: no '--precision float runs on the reference only' for a
    --precision the user never gave."""
    import numpy as np
    _sinabs_like_if_graph(tmp_path / "g.nir")
    np.save(tmp_path / "x.npy", np.random.default_rng(1).integers(0, 2, (6, 2, 6)).astype(np.float32))
    assert main(["simulate", str(tmp_path / "g.nir"), "--input", str(tmp_path / "x.npy"), "--input-scale", "1",
                 "--dt", "1", "--backend", "lava", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backend"] == "lava" and result["precision"] == "int"


def test_simulate_records_chosen_layers_voltages_and_currents(tmp_path, capsys):
    """Traces to compare with other simulators: a CubaLIF layer's i and v at every step, checked
    against its forward-Euler equations stepped here by hand; the integer run records messages."""
    import nir
    import numpy as np
    n = 3
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}),
             "fc": nir.Linear(weight=np.array([[1.0, 0.5], [0.2, 1.0], [0.7, 0.7]])),
             "cuba": nir.CubaLIF(tau_syn=np.full(n, 5.0), tau_mem=np.full(n, 10.0), r=np.ones(n),
                                 v_leak=np.zeros(n), v_threshold=np.full(n, 0.3), w_in=np.ones(n)),
             "output": nir.Output(output_type={"output": np.array([n])})}
    nir.write(str(tmp_path / "g.nir"), nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "cuba"),
                                                                          ("cuba", "output")]))
    x = np.random.default_rng(0).integers(0, 2, (12, 2, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    trace = tmp_path / "t.npz"
    assert main(["simulate", str(tmp_path / "g.nir"), "--input", str(tmp_path / "x.npy"), "--dt", "1",
                 "--record", "cuba", "--save-record", str(trace), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["saved_record"] == str(trace)
    with np.load(trace) as f:
        got = {k: f[k] for k in f.files}
    assert set(got) == {"cuba.out", "cuba.v", "cuba.i"} and got["cuba.v"].shape == (12, 2, n)
    w = nodes["fc"].weight
    i, v = np.zeros((2, n)), np.zeros((2, n))
    for t in range(12):
        i = i - i / 5.0 + (1 / 5.0) * (x[t] @ w.T)
        v = v + (1 / 10.0) * (-v + i)
        z = v > 0.3
        v = np.where(z, 0.0, v)
        np.testing.assert_allclose(got["cuba.i"][t], i, rtol=1e-12)
        np.testing.assert_allclose(got["cuba.v"][t], v, rtol=1e-12)
        np.testing.assert_array_equal(got["cuba.out"][t], z)
    assert got["cuba.out"].any()
    assert main(["simulate", str(tmp_path / "g.nir"), "--input", str(tmp_path / "x.npy"), "--record", "nope",
                 "--save-record", str(tmp_path / "u.npz")]) == 2
    assert "no layer 'nope' to record" in capsys.readouterr().err and not (tmp_path / "u.npz").exists()
    assert main(["simulate", str(tmp_path / "g.nir"), "--input", str(tmp_path / "x.npy"), "--record", "cuba"]) == 2
    assert "go together" in capsys.readouterr().err


def test_simulate_records_an_integer_runs_messages(digits_nir, tmp_path, capsys):
    import numpy as np
    assert main(["simulate", str(digits_nir), "--samples", "5", "--record", "features_1,output", "--save-record",
                 str(tmp_path / "t.npz")]) == 0
    with np.load(tmp_path / "t.npz") as f:
        assert set(f.files) == {"features_1.out", "output.out"}
        assert f["features_1.out"].shape[1] == 5 and f["features_1.out"].dtype.kind == "i"
        assert f["features_1.out"].max() > 0


def test_report_runs_a_graph_of_one_dimensional_inputs(tmp_path, capsys):
    """The NIR paper's LIF graph takes a vector per step: --input gives it what --dataset cannot."""
    import nir
    import numpy as np
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             "fc": nir.Affine(weight=np.array([[2.0, 0.5, 0.0], [0.0, 1.0, 2.0]]), bias=np.zeros(2)),
             "lif": nir.LIF(tau=np.full(2, 0.02), r=np.full(2, 20.0), v_leak=np.zeros(2), v_threshold=np.ones(2),
                            v_reset=np.zeros(2)),
             "output": nir.Output(output_type={"output": np.array([2])})}
    nir.write(str(tmp_path / "lif.nir"), nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"),
                                                                             ("lif", "output")]))
    np.save(tmp_path / "x.npy", np.random.default_rng(2).integers(0, 2, (20, 3, 3)).astype(np.float32))
    assert main(["report", str(tmp_path / "lif.nir"), "--input", str(tmp_path / "x.npy"), "--input-scale", "1",
                 "-o", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["timesteps"] == 20 and report["data"]["samples"] == 3 and report["warnings"] == []
    assert next(r for r in report["activity"]["layers"] if r["name"] == "lif")["unit_spikes"] > 0
