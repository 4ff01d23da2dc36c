"""Executions per second of a trivial passing test: through the bubblewrap sandbox, the Docker sandbox, and bare.

    python bench/sandbox_exec.py [--runs 200] [--no-docker]

The program is `python3 -I -c "assert 1 + 1 == 2"`, with the system's /usr/bin/python3 on both sides (the sandbox
runs that one; a bare "python3" may resolve to a slower shim such as pyenv's). The bare side captures output and
has a timeout, as a harness would; the sandbox side is `Sandbox.run` with default limits.

bubblewrap, `BwrapSandbox()` as it is made by default (as root: reused sandboxes, each with its agent) against bare:
- sequential: `runs` of each, one at a time, interleaved bare / sandbox so that load from other processes on the
  machine falls on both alike;
- parallel: `runs` of each through two worker threads (one per core on the 2-core reference box), bare first;
- fresh_bwrap_sequential: as sequential, for `BwrapSandbox(reuse=False)`, a new sandbox per run (the default when
  not root).

Docker (`DockerSandbox.run`, a pool of 2 warm containers, each reused for up to 100 runs), under "docker": the same
program, `runs` sequentially and through two worker threads; the median latency of one run when the pool is full
(`warm_latency_median_ms`, 20 runs a second apart); plus `cold_docker_run`: `docker run --rm` per second through the
SDK (create, start, wait, remove; `runs // 10` of them) for reference. Its goal is >= 20 runs/s warm.

Rates are runs / wall seconds; `ratio` is sandbox / bare (the goal is >= 0.8). Wall rates move with the load that
other processes put on the machine; the CPU time per run (ours plus every descendant's: bwrap, the agent and the
programs it reaped) moves much less, and its `cpu_ratio` bounds what the sandbox can reach on a saturated machine.
Of the reused sandbox's CPU per run, `agent_cpu_ms_per_run` is its agents' own (fork, reset) and
`program_cpu_ms_per_run` the programs' (with what the child did before its exec).
Results go to bench/results/sandbox_exec.json.
"""

import argparse
import contextlib
import json
import os
import resource
import sys
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from sandboxes import Sandbox, SandboxError
from sandboxes.bwrap import BwrapSandbox

CODE = "assert 1 + 1 == 2"
PYTHON = "/usr/bin/python3"


def run_bare() -> None:
    result = subprocess.run([PYTHON, "-I", "-c", CODE], capture_output=True, timeout=10)
    assert result.returncode == 0, result


def sandboxed(sandbox: Sandbox):
    def run() -> None:
        result = sandbox.run(["python3", "-I", "-c", CODE])
        assert result.ok, result

    return run


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def cpu_seconds() -> float:
    """CPU time so far of this process and all its descendants: the reaped ones (through their parents) and the live
    ones (a reused sandbox's bwrap and agent, with the programs the agent reaped)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = time.process_time() + children.ru_utime + children.ru_stime
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def agents_cpu() -> tuple[float, float]:
    """CPU seconds of the live reused sandboxes' agents: their own, and the programs they reaped."""
    own = reaped = 0.0
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.cmdline()[:1] == ["python3"] and "/agent.py" in process.cmdline():
                times = process.cpu_times()
                own, reaped = own + times.user + times.system, reaped + times.children_user + times.children_system
    return own, reaped


def cpu_timed(run) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its descendants) of one call."""
    before = cpu_seconds()
    wall = timed(run)
    return wall, cpu_seconds() - before


def rates(bare_s: float, sandbox_s: float, runs: int) -> dict:
    return {"bare_per_s": runs / bare_s, "sandbox_per_s": runs / sandbox_s, "ratio": bare_s / sandbox_s}


def docker_rates(runs: int) -> dict:
    """Warm-pool runs/s of the Docker sandbox, sequential and with 2 workers; cold `docker run --rm`/s."""
    import docker

    from sandboxes.docker import IMAGE, DockerSandbox

    with DockerSandbox() as sandbox:
        run = sandboxed(sandbox)
        latencies = []
        for _ in range(20):
            time.sleep(1)  # let the pool fill: this is one run's latency off a warm container
            latencies.append(timed(run))
        time.sleep(2)
        sequential_s = timed(lambda: [run() for _ in range(runs)])
        time.sleep(2)
        with ThreadPoolExecutor(2) as pool:
            parallel_s = timed(lambda: list(pool.map(lambda _: run(), range(runs))))
    client = docker.from_env()
    cold = max(1, runs // 10)
    cold_s = timed(lambda: [client.containers.run(IMAGE, ["python3", "-I", "-c", CODE], remove=True,
                                                  network_mode="none") for _ in range(cold)])
    client.close()
    return {"warm_sequential_per_s": runs / sequential_s, "warm_parallel_2_workers_per_s": runs / parallel_s,
            "warm_latency_median_ms": statistics.median(latencies) * 1e3,
            "cold_docker_run_per_s": cold / cold_s, "cold_runs": cold, "goal_warm_per_s": 20}


def bwrap_rates(runs: int) -> dict:
    """Reused and fresh bubblewrap against bare, interleaved run by run; and with 2 workers."""
    sandbox = BwrapSandbox()
    sandbox_run, fresh_run = sandboxed(sandbox), sandboxed(BwrapSandbox(reuse=False))
    for run in (run_bare, sandbox_run, fresh_run):  # warm the page cache on every side
        run()

    bare, boxed, agents_before = [], [], agents_cpu()
    for _ in range(runs):
        bare.append(cpu_timed(run_bare))
        boxed.append(cpu_timed(sandbox_run))
    agents = [(after - before) / runs * 1e3 for before, after in zip(agents_before, agents_cpu())]
    sequential = rates(sum(w for w, _ in bare), sum(w for w, _ in boxed), runs)
    sequential["reused"] = sandbox.reuse
    for side, times in [("bare", bare), ("sandbox", boxed)]:
        sequential[f"{side}_median_ms"] = statistics.median(w for w, _ in times) * 1e3
        sequential[f"{side}_cpu_ms_per_run"] = sum(c for _, c in times) / runs * 1e3
    sequential["cpu_ratio"] = sequential["bare_cpu_ms_per_run"] / sequential["sandbox_cpu_ms_per_run"]
    sequential["agent_cpu_ms_per_run"], sequential["program_cpu_ms_per_run"] = agents  # of the sandbox's CPU

    with ThreadPoolExecutor(2) as pool:
        bare_s = timed(lambda: list(pool.map(lambda _: run_bare(), range(runs))))
        sandbox_s = timed(lambda: list(pool.map(lambda _: sandbox_run(), range(runs))))
    parallel = rates(bare_s, sandbox_s, runs)

    # Last: the kernel tears down each fresh sandbox's network namespace later, in the background
    bare, fresh = [], []
    for _ in range(runs):
        bare.append(cpu_timed(run_bare))
        fresh.append(cpu_timed(fresh_run))
    fresh_sequential = rates(sum(w for w, _ in bare), sum(w for w, _ in fresh), runs)
    for side, times in [("bare", bare), ("sandbox", fresh)]:
        fresh_sequential[f"{side}_cpu_ms_per_run"] = sum(c for _, c in times) / runs * 1e3
    fresh_sequential["cpu_ratio"] = (fresh_sequential["bare_cpu_ms_per_run"]
                                     / fresh_sequential["sandbox_cpu_ms_per_run"])
    sandbox.close()
    return {"sequential": sequential, "parallel_2_workers": parallel, "fresh_bwrap_sequential": fresh_sequential}


def unless_absent(backend: str, measure, runs: int) -> dict:
    """The backend's figures, or {"skipped": why} when it cannot run here (said on stderr; the others still count)."""
    try:
        return measure(runs)
    except SandboxError as error:
        print(f"{backend}: skipped, not usable here ({error})", file=sys.stderr)
        return {"skipped": str(error)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--no-docker", action="store_true", help="measure bwrap and bare only")
    args = parser.parse_args()
    results = {"program": f'python3 -I -c "{CODE}"', "runs": args.runs, "cpus": os.cpu_count(),
               "load_avg_1min_before": os.getloadavg()[0], "goal_ratio": 0.8}
    results |= unless_absent("bubblewrap", bwrap_rates, args.runs)
    if not args.no_docker:
        results["docker"] = unless_absent("docker", docker_rates, args.runs)
        if "skipped" not in results["docker"]:
            bare_per_s = args.runs / timed(lambda: [run_bare() for _ in range(args.runs)])
            results["docker"]["ratio_warm_sequential_vs_bare"] = results["docker"]["warm_sequential_per_s"] / bare_per_s
    path = Path("bench/results/sandbox_exec.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
