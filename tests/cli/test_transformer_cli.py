"""The command line on a vision transformer: train, export, inspect, simulate (reference and
Lava), report, and the exports that cannot carry attention, each refused in one line."""

from __future__ import annotations

import json

import pytest

from n2c.ann.train import save_checkpoint
from n2c.cli.main import main


@pytest.fixture(scope="module")
def vit_files(vit_softmax_signed, tmp_path_factory):
    root = tmp_path_factory.mktemp("vit")
    checkpoint = root / "vit.pt"
    save_checkpoint(vit_softmax_signed, checkpoint, (1, 8, 8))
    graph = root / "vit.nir"
    assert main(["export", str(checkpoint), "-o", str(graph), "--dataset", "digits", "--method", "pmsm"]) == 0
    return checkpoint, graph


def test_train_builds_a_vit_with_the_chosen_attention(tmp_path, capsys):
    out = tmp_path / "vit.pt"
    assert main(["train", "--model-name", "vit", "--attention", "softmax", "--dataset", "digits", "--epochs", "1",
                 "--samples", "128", "--width", "8", "-o", str(out)]) == 0
    assert out.exists() and "test accuracy" in capsys.readouterr().out


def test_inspect_shows_the_attention_nodes(vit_files, capsys):
    _, graph = vit_files
    assert main(["inspect", str(graph), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    kinds = {row["node"]: row["type"] for row in info["nodes"]}
    assert kinds["blocks_0_attn_scores"] == "n2c.Product" and kinds["blocks_0_attn_softmax"] == "n2c.Softmax"
    assert info["backends"]["lava"] == "yes" and info["backends"]["reference int"] == "yes"
    assert main(["inspect", str(graph)]) == 0
    assert "other NIR readers cannot load this file" in capsys.readouterr().out


def test_simulate_on_the_reference(vit_files, capsys):
    _, graph = vit_files
    assert main(["simulate", str(graph), "--dataset", "digits", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] > 0.8  # the trained tiny ViT (seen: 0.89)
    assert "blocks_0_attn_a_act" in result["spikes_per_layer"]


@pytest.mark.slow
def test_simulate_on_lava_predicts_as_the_reference(vit_files, capsys):
    _, graph = vit_files
    runs = []
    for backend in ("reference", "lava"):
        assert main(["simulate", str(graph), "--dataset", "digits", "--samples", "12", "--backend", backend,
                     "--json"]) == 0
        runs.append(json.loads(capsys.readouterr().out))
    assert runs[0]["predictions"] == runs[1]["predictions"]
    assert runs[0]["spikes_per_layer"] == runs[1]["spikes_per_layer"]


def test_report_prices_the_products_off_the_neuro_cores(vit_files, tmp_path, capsys):
    _, graph = vit_files
    out = tmp_path / "report"
    assert main(["report", str(graph), "--dataset", "digits", "--samples", "30", "-o", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    offcore = {row["name"]: row for row in report["activity"]["offcore"]}
    assert set(offcore) == {"blocks_0_attn_scores", "blocks_0_attn_mix"}
    assert offcore["blocks_0_attn_scores"]["offcore_exps"] == 2 * 16 * 16  # one per attention weight (T = 1)
    assert 0 < offcore["blocks_0_attn_mix"]["offcore_macs"] <= offcore["blocks_0_attn_mix"]["dense_macs"]
    assert report["energy"]["components"]["offcore_ops"] > 0
    assert report["ann"]["macs"] > sum(r["dense_macs"] for r in offcore.values())  # attention counted in the ANN
    assert "Off-core operations" in (out / "report.md").read_text()


def test_exports_that_cannot_carry_attention_say_so(vit_files, tmp_path, capsys):
    checkpoint, graph = vit_files
    assert main(["export", str(checkpoint), "-o", str(tmp_path / "p.nir"), "--dataset", "digits", "--method", "pmsm",
                 "--portable"]) == 2
    assert "standard NIR 1.0 cannot state" in capsys.readouterr().err and not (tmp_path / "p.nir").exists()
    assert main(["export", str(graph), "--to", "netx", "-o", str(tmp_path / "v.net")]) == 2
    assert "netx has no such block" in capsys.readouterr().err and not (tmp_path / "v.net").exists()


@pytest.mark.slow
def test_a_report_from_lava_counts_what_the_reference_counts(vit_files, tmp_path):
    _, graph = vit_files
    reports = []
    for simulator in ("reference", "lava"):
        out = tmp_path / simulator
        assert main(["report", str(graph), "--dataset", "digits", "--samples", "3", "--simulator", simulator,
                     "-o", str(out)]) == 0
        reports.append(json.loads((out / "report.json").read_text()))
    assert reports[0]["activity"]["totals"] == reports[1]["activity"]["totals"]
    assert reports[0]["activity"]["offcore"] == reports[1]["activity"]["offcore"]
