"""Wall time, peak RAM and held-out before -> after of the default `make loop DOMAIN=chess` (or `code`) run.

    python bench/default_loop.py [--results FILE] [--domain code] [extra selfplay loop flags]

Runs `selfplay loop` as a child process, samples the memory of its whole process tree (trainer, vLLM engine and
workers, Stockfish) every second, and writes bench/results/default_loop.json (or FILE). Memory is reported two
ways: the sum of resident sets (counts pages shared between processes once per process, so it overstates) and
the sum of proportional set sizes (PSS: shared pages split among their users, so the tree's real footprint); the
PSS per kind of process at the peak and every 30 s (minutes, GB in all, GB per kind) say where and when it is.
The code domain's results go to bench/results/default_loop_code.json. The held-out figures are kept per set with
their 95% intervals, and the paired before -> after change.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil


def tree_memory(process: psutil.Process) -> tuple[int, int, dict[str, float]]:
    """(sum of RSS, sum of PSS, PSS in GB per kind of process) over the process and its descendants."""
    rss = pss = 0
    kinds: dict[str, float] = {}
    for p in [process, *process.children(recursive=True)]:
        try:
            info, name = p.memory_full_info(), p.name()
        except psutil.Error:
            continue
        rss, pss = rss + info.rss, pss + info.pss
        kind = "selfplay (trainer, vLLM)" if p.pid == process.pid else name
        kinds[kind] = round(kinds.get(kind, 0.0) + info.pss / 1e9, 2)
    return rss, pss, kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", help="results file (default: bench/results/default_loop[_<domain>].json)")
    parser.add_argument("--domain", default="chess")
    known, args = parser.parse_known_args()  # the rest goes to `selfplay loop`
    suffix = "" if known.domain == "chess" else f"_{known.domain}"
    results = Path(known.results or f"bench/results/default_loop{suffix}.json")
    run = f"bench-default-{known.domain}-{time.strftime('%Y%m%d-%H%M%S')}"
    selfplay = str(Path(sys.executable).with_name("selfplay"))
    start = time.perf_counter()
    child = subprocess.Popen([selfplay, "loop", "--domain", known.domain, "--run", run, *args])
    watched, peak_rss, peak_pss, at_peak, timeline = psutil.Process(child.pid), 0, 0, {}, []
    while child.poll() is None:
        rss, pss, kinds = tree_memory(watched)
        if pss > peak_pss:
            at_peak = {"minute": round((time.perf_counter() - start) / 60, 2), "pss_gb_by_process": kinds}
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        if not timeline or time.perf_counter() - start >= 30 * len(timeline):  # a sample every 30 s
            timeline.append([round((time.perf_counter() - start) / 60, 2), round(pss / 1e9, 2), kinds])
        time.sleep(1.0)
    wall = time.perf_counter() - start
    evaluation = None
    if child.returncode == 0:  # per set: [mean, low, high] of each metric, and the paired change before -> after
        full = json.loads((Path("runs") / run / "eval.json").read_text())
        evaluation = {label: full[label]["sets"] for label in ("before", "fine-tuned", "after") if label in full}
        evaluation["change"] = full["change"]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    result = {"run": run, "returncode": child.returncode, "wall_minutes": wall / 60, "args": args, "cpu": cpu,
              "peak_rss_sum_gb": peak_rss / 1e9, "peak_pss_sum_gb": peak_pss / 1e9, "at_peak": at_peak,
              "pss_gb_timeline": timeline, "eval": evaluation}
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
