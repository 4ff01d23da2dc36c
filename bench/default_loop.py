"""Wall time, peak RAM and held-out before -> after of the default `make loop DOMAIN=chess` run.

    python bench/default_loop.py [extra selfplay loop flags]

Runs `selfplay loop` as a child process, samples the resident memory of its whole process tree (trainer, vLLM
engine and workers, Stockfish) every second, and writes bench/results/default_loop.json.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def main() -> None:
    run = f"bench-default-{time.strftime('%Y%m%d-%H%M%S')}"
    selfplay = str(Path(sys.executable).with_name("selfplay"))
    start = time.perf_counter()
    child = subprocess.Popen([selfplay, "loop", "--domain", "chess", "--run", run, *sys.argv[1:]])
    watched, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        peak = max(peak, tree_rss(watched))
        time.sleep(1.0)
    wall = time.perf_counter() - start
    evaluation = json.loads((Path("runs") / run / "eval.json").read_text()) if child.returncode == 0 else None
    result = {"run": run, "returncode": child.returncode, "wall_minutes": wall / 60, "peak_rss_gb": peak / 1e9, "eval": evaluation}
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/default_loop.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
