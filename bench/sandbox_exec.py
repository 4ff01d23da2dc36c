"""Executions per second of a trivial passing test: through the bubblewrap sandbox vs a bare subprocess.

    python bench/sandbox_exec.py [--runs 200]

The program is `python3 -I -c "assert 1 + 1 == 2"`, with the system's /usr/bin/python3 on both sides (the sandbox
runs that one; a bare "python3" may resolve to a slower shim such as pyenv's). The bare side captures output and
has a timeout, as a harness would; the sandbox side is `BwrapSandbox.run` with default limits. Two measurements:

- sequential: `runs` of each, one at a time, interleaved bare / sandbox so that load from other processes on the
  machine falls on both alike;
- parallel: `runs` of each through two worker threads (one per core on the 2-core reference box), bare first.

Rates are runs / wall seconds; `ratio` is sandbox / bare (the goal is >= 0.8). Wall rates move with the load that
other processes put on the machine; the CPU time per run (ours plus our children's) moves much less, and its
`cpu_ratio` bounds what the sandbox can reach on a saturated machine. Results go to bench/results/sandbox_exec.json.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sandboxes.bwrap import BwrapSandbox

CODE = "assert 1 + 1 == 2"
PYTHON = "/usr/bin/python3"


def run_bare() -> None:
    result = subprocess.run([PYTHON, "-I", "-c", CODE], capture_output=True, timeout=10)
    assert result.returncode == 0, result


def sandboxed(sandbox: BwrapSandbox):
    def run() -> None:
        result = sandbox.run(["python3", "-I", "-c", CODE])
        assert result.ok, result

    return run


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def cpu_timed(run) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its reaped children) of one call."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN), time.process_time()
    wall = timed(run)
    after = resource.getrusage(resource.RUSAGE_CHILDREN), time.process_time()
    children = after[0].ru_utime + after[0].ru_stime - before[0].ru_utime - before[0].ru_stime
    return wall, children + after[1] - before[1]


def rates(bare_s: float, sandbox_s: float, runs: int) -> dict:
    return {"bare_per_s": runs / bare_s, "sandbox_per_s": runs / sandbox_s, "ratio": bare_s / sandbox_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    sandbox_run = sandboxed(BwrapSandbox())
    run_bare()  # warm the page cache on both sides
    sandbox_run()
    load_before = os.getloadavg()[0]

    bare, boxed = [], []
    for _ in range(args.runs):
        bare.append(cpu_timed(run_bare))
        boxed.append(cpu_timed(sandbox_run))
    sequential = rates(sum(w for w, _ in bare), sum(w for w, _ in boxed), args.runs)
    for side, runs in [("bare", bare), ("sandbox", boxed)]:
        sequential[f"{side}_median_ms"] = statistics.median(w for w, _ in runs) * 1e3
        sequential[f"{side}_cpu_ms_per_run"] = sum(c for _, c in runs) / args.runs * 1e3
    sequential["cpu_ratio"] = sequential["bare_cpu_ms_per_run"] / sequential["sandbox_cpu_ms_per_run"]

    with ThreadPoolExecutor(2) as pool:
        bare_s = timed(lambda: list(pool.map(lambda _: run_bare(), range(args.runs))))
        sandbox_s = timed(lambda: list(pool.map(lambda _: sandbox_run(), range(args.runs))))
    parallel = rates(bare_s, sandbox_s, args.runs)

    results = {
        "program": f'python3 -I -c "{CODE}"',
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "load_avg_1min_before": load_before,
        "sequential": sequential,
        "parallel_2_workers": parallel,
        "goal_ratio": 0.8,
    }
    path = Path("bench/results/sandbox_exec.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
