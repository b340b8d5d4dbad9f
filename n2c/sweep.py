"""Sweeps: many independent cases (a model at several methods and T), run in parallel over
processes or machines, resumable after a crash.

    run_sweep(cases, run_case, directory, world)

Each finished case is one JSON file ``directory/cases/<key>.json``, written atomically by the
process that ran it; a case whose file exists is never run again, so a sweep that crashed
(or was stopped) resumes with the cases it had not finished. Under torchrun
(:mod:`n2c.distributed`) the processes take cases from one queue, a counter in the process
group's key-value store (``torch.distributed.TCPStore``, which torchrun already runs): a
process asks for the next index when it is free, so long cases do not hold the others up.
Results are read back from the files, so every process returns the whole table; with
several machines, ``directory`` must be on a file system they share.

Why torch.distributed and not Ray: it ships with torch (no extra to install), torchrun is
already how n2c trains on many processes, and a sweep of tens of cases needs a queue and a
barrier, not a scheduler.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch.distributed as dist

from n2c.distributed import World
from n2c.errors import N2CError
from n2c.files import atomic_write

QUEUE_KEY = "n2c.sweep.next"


@dataclass(frozen=True)
class Case:
    key: str  # a file name: letters, digits, '-', '_', '.'
    params: dict


def case_file(directory: Path, case: Case) -> Path:
    return Path(directory) / "cases" / f"{case.key}.json"


def done(directory: Path, case: Case) -> dict | None:
    """The recorded result of ``case``, or None if it has not finished (a damaged file counts as not
    finished: it is run again)."""
    path = case_file(directory, case)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("params") == case.params else None


def _next_index(world: World, counter: list[int]) -> int:
    """The next case to take: from the shared counter under torchrun, else in order."""
    if world.distributed:
        return int(dist.distributed_c10d._get_default_store().add(QUEUE_KEY, 1)) - 1
    counter[0] += 1
    return counter[0] - 1


def run_sweep(cases: list[Case], run_case: Callable[[Case], dict], directory: str | Path,
              world: World | None = None, say: Callable[[str], None] = print) -> list[dict]:
    """Run every case not yet recorded in ``directory`` and return all records in the order of
    ``cases``: ``{"key", "params", "result", "seconds", "rank"}``. A case that raises is reported
    and left unrecorded (a later run retries it); the others go on. Raises N2CError at the end if
    any case failed."""
    world = world or World()
    directory = Path(directory)
    keys = [c.key for c in cases]
    if len(set(keys)) != len(keys):
        raise N2CError("sweep cases must have distinct keys")
    bad = [k for k in keys if not k or not all(ch.isalnum() or ch in "-_." for ch in k)]
    if bad:
        raise N2CError(f"sweep case key {bad[0]!r} is not a plain file name (letters, digits, '-', '_', '.')")
    (directory / "cases").mkdir(parents=True, exist_ok=True)
    todo = [c for c in cases if done(directory, c) is None]
    if world.main:
        say(f"sweep: {len(cases) - len(todo)} of {len(cases)} cases already done, {len(todo)} to run"
            + (f" on {world.size} processes" if world.distributed else ""))
    world.barrier()  # every process has seen the same list of cases to do
    failed, counter = [], [0]
    while True:
        i = _next_index(world, counter)
        if i >= len(todo):
            break
        case = todo[i]
        start = time.perf_counter()
        try:
            result = run_case(case)
        except Exception as e:  # one case's failure is reported; the sweep goes on
            detail = str(e) if isinstance(e, N2CError) else traceback.format_exc(limit=3).strip().splitlines()[-1]
            say(f"sweep: case {case.key} failed: {detail}")
            failed.append(case.key)
            continue
        record = {"key": case.key, "params": case.params, "result": result,
                  "seconds": time.perf_counter() - start, "rank": world.rank}
        text = json.dumps(record, indent=1, default=float)
        atomic_write(case_file(directory, case), lambda tmp: Path(tmp).write_text(text))
        say(f"sweep: case {case.key} done ({record['seconds']:.1f} s, rank {world.rank})")
    world.barrier()  # every case is finished (or failed) before anyone reads the table
    failed_total = int(world.sum(float(len(failed))))
    if failed_total:
        raise N2CError(f"{failed_total} sweep case(s) failed (named above); run the same command again to retry "
                       "them (finished cases are kept)")
    return [done(directory, c) for c in cases]

