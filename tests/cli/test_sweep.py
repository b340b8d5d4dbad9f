"""Sweeps (n2c.sweep, n2c sweep): every case runs once, finished cases survive a crash and are not
redone, and two processes under torchrun give the table one process gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from n2c.errors import N2CError
from n2c.sweep import Case, case_file, run_sweep

CASES = [Case(f"c{i}", {"i": i}) for i in range(5)]


def _quiet(line):
    pass


def test_a_crashed_sweep_resumes_without_redoing_finished_cases(tmp_path):
    ran = []

    def crash_at_third(case):
        if len(ran) == 2:
            raise KeyboardInterrupt  # the process dies here: nothing after this case is recorded
        ran.append(case.key)
        return {"square": case.params["i"] ** 2}

    with pytest.raises(KeyboardInterrupt):
        run_sweep(CASES, crash_at_third, tmp_path, say=_quiet)
    assert ran == ["c0", "c1"] and case_file(tmp_path, CASES[0]).exists()
    again = []
    records = run_sweep(CASES, lambda c: again.append(c.key) or {"square": c.params["i"] ** 2}, tmp_path, say=_quiet)
    assert again == ["c2", "c3", "c4"]  # c0 and c1 were not redone
    assert [r["result"]["square"] for r in records] == [0, 1, 4, 9, 16]


def test_a_failing_case_is_named_the_others_finish_and_a_rerun_retries_only_it(tmp_path):
    said = []

    def fail_c1(case):
        if case.key == "c1":
            raise N2CError("no such layer")
        return {}

    with pytest.raises(N2CError, match="1 sweep case"):
        run_sweep(CASES, fail_c1, tmp_path, say=said.append)
    assert any("case c1 failed: no such layer" in line for line in said)
    assert [case_file(tmp_path, c).exists() for c in CASES] == [True, False, True, True, True]
    again = []
    run_sweep(CASES, lambda c: again.append(c.key) or {}, tmp_path, say=_quiet)
    assert again == ["c1"]


def test_changed_parameters_or_a_damaged_record_run_the_case_again(tmp_path):
    run_sweep(CASES[:2], lambda c: {}, tmp_path, say=_quiet)
    case_file(tmp_path, CASES[1]).write_text("{not json")
    changed = [Case("c0", {"i": 100}), CASES[1]]
    again = []
    run_sweep(changed, lambda c: again.append(c.key) or {}, tmp_path, say=_quiet)
    assert again == ["c0", "c1"]


@pytest.mark.parametrize("keys, message", [(["a", "a"], "distinct"), (["../x"], "plain file name"),
                                           ([""], "plain file name")])
def test_bad_case_keys_are_refused(tmp_path, keys, message):
    with pytest.raises(N2CError, match=message):
        run_sweep([Case(k, {}) for k in keys], lambda c: {}, tmp_path, say=_quiet)


def _env():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _sweep(checkpoint, out, processes, timesteps="1,2"):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else [sys.executable]
    return subprocess.run([*launcher, "-m", "n2c", "sweep", str(checkpoint), "--method", "mtn,if", "--timesteps",
                           timesteps, "--dataset", "digits", "--samples", "60", "-o", str(out)],
                          env=_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def scripted(qcfs_model, tmp_path_factory):
    from n2c.ann.train import save_checkpoint
    return save_checkpoint(qcfs_model, tmp_path_factory.mktemp("sweep") / "digits_qcfs.pt", (1, 8, 8))


def test_two_processes_share_the_cases_and_give_the_one_process_table(tmp_path, scripted):
    one = _sweep(scripted, tmp_path / "one", 1)
    two = _sweep(scripted, tmp_path / "two", 2)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    a, b = (json.loads((tmp_path / d / "sweep.json").read_text()) for d in ("one", "two"))
    strip = lambda records: [{k: v for k, v in r["result"].items() if k != "graph"} for r in records]  # noqa: E731
    assert strip(a) == strip(b) and len(a) == 4
    assert (tmp_path / "one" / "sweep.md").read_text() == (tmp_path / "two" / "sweep.md").read_text()
    assert sorted(line.split()[2] for line in two.stderr.splitlines() if line.endswith(")") and " done (" in line) \
        == ["if_T1", "if_T2", "mtn_T1", "mtn_T2"]  # each case ran once
    assert a[0]["result"]["accuracy"] > 0.5 and a[0]["result"]["cores"] > 0
    more = _sweep(scripted, tmp_path / "two", 2, timesteps="1,2,4")
    assert more.returncode == 0, more.stderr
    assert "4 of 6 cases already done, 2 to run on 2 processes" in more.stderr
    assert "mtn_T1 done" not in more.stderr and "mtn_T4 done" in more.stderr


def test_sweep_options_are_checked_in_one_line(tmp_path, scripted):
    from n2c.cli.main import main
    assert main(["sweep", str(scripted), "--method", "mtn,bogus", "-o", str(tmp_path / "s")]) == 2
    assert main(["sweep", str(scripted), "--timesteps", "1,0", "-o", str(tmp_path / "s")]) == 2
    assert main(["sweep", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "s")]) == 2
