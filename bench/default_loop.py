"""Wall time, peak RAM and held-out before -> after of the default `make loop DOMAIN=chess` (or `code`) run.

    python bench/default_loop.py [--results FILE] [--domain code] [extra selfplay loop flags]

Runs `selfplay loop` as a child process, samples the memory of its whole process tree (trainer, vLLM engine and
workers, Stockfish) every second, and writes bench/results/default_loop.json (or FILE). Memory is reported two
ways: the sum of resident sets (counts pages shared between processes once per process, so it overstates) and
the sum of proportional set sizes (PSS: shared pages split among their users, so the tree's real footprint).
The code domain's results go to bench/results/default_loop_code.json.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil


def tree_memory(process: psutil.Process) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) over the process and its descendants."""
    rss = pss = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            info = p.memory_full_info()
        except psutil.Error:
            continue
        rss, pss = rss + info.rss, pss + info.pss
    return rss, pss


def main() -> None:
    args = sys.argv[1:]
    domain = args[args.index("--domain") + 1] if "--domain" in args else "chess"
    results = Path("bench/results/default_loop.json" if domain == "chess" else f"bench/results/default_loop_{domain}.json")
    if args[:1] == ["--results"]:
        results, args = Path(args[1]), args[2:]
    run = f"bench-default-{domain}-{time.strftime('%Y%m%d-%H%M%S')}"
    selfplay = str(Path(sys.executable).with_name("selfplay"))
    start = time.perf_counter()
    child = subprocess.Popen([selfplay, "loop", "--domain", domain, "--run", run, *args])
    watched, peak_rss, peak_pss = psutil.Process(child.pid), 0, 0
    while child.poll() is None:
        rss, pss = tree_memory(watched)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(1.0)
    wall = time.perf_counter() - start
    evaluation = json.loads((Path("runs") / run / "eval.json").read_text()) if child.returncode == 0 else None
    result = {"run": run, "returncode": child.returncode, "wall_minutes": wall / 60, "args": args,
              "peak_rss_sum_gb": peak_rss / 1e9, "peak_pss_sum_gb": peak_pss / 1e9, "eval": evaluation}
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
