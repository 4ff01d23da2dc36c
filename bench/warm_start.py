"""Does a supervised warm start help GRPO? Held-out figures after warm start + N GRPO steps vs N GRPO steps alone.

    python bench/warm_start.py [--steps 10] [--examples 256] [--targets engine]

Runs, one after the other in this run, as child processes with the default settings otherwise:
1. `selfplay sft --targets TARGETS --examples EXAMPLES` -> runs/<tag>-sft/model;
2. `selfplay loop --model runs/<tag>-sft/model --steps N` (its "before" is the warm-started model);
3. `selfplay loop --steps N` from the base model.
Both loops evaluate on the same 100 held-out positions. Results go to bench/results/warm_start.json.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

KEYS = ("legal_move_reward", "engine_reward", "score_loss", "best_move_reward")


def selfplay(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("selfplay")), *args], check=True)
    return time.perf_counter() - start


def figures(result: dict) -> dict:
    return {key: result.get(key) for key in KEYS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--targets", default="engine")
    args = parser.parse_args()
    tag = f"bench-warm-{time.strftime('%Y%m%d-%H%M%S')}"
    sft_seconds = selfplay("sft", "--targets", args.targets, "--examples", str(args.examples), "--run", f"{tag}-sft")
    warm_seconds = selfplay("loop", "--model", f"runs/{tag}-sft/model", "--steps", str(args.steps), "--run", f"{tag}-warm")
    cold_seconds = selfplay("loop", "--steps", str(args.steps), "--run", f"{tag}-cold")
    warm = json.loads(Path(f"runs/{tag}-warm/eval.json").read_text())
    cold = json.loads(Path(f"runs/{tag}-cold/eval.json").read_text())
    result = {
        "steps": args.steps,
        "sft": json.loads(Path(f"runs/{tag}-sft/sft.json").read_text()),
        "base": figures(cold["before"]),
        "after_warm_start": figures(warm["before"]),
        "warm_start_then_grpo": figures(warm["after"]),
        "grpo_alone": figures(cold["after"]),
        "minutes": {"sft": sft_seconds / 60, "warm_loop": warm_seconds / 60, "cold_loop": cold_seconds / 60},
    }
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/warm_start.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
