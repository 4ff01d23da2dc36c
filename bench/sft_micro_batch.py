"""Seconds per optimizer step of the warm start's fine-tune (`selfplay.sft.fine_tune`) by micro-batch size.

    python bench/sft_micro_batch.py [--examples 48] [--sizes 8,2,1] [--rounds 2]

The same examples (the default warm start's positions: playouts and generated mates in one, each answered with a
random legal move; the answers do not change the cost), 8 examples per optimizer step, the default model and LoRA,
each micro-batch size in turn, `--rounds` times in alternating order (these machines are noisy). Prints each run and
the median seconds per step of each size against micro-batch 2 (the default); bench/results/sft_micro_batch.json.
TRL's and transformers' own output goes to a log file in the temp dir, as the CLI's does.
"""

import argparse
import json
import random
import statistics
import tempfile
from pathlib import Path

import chess
from transformers import AutoTokenizer

from selfplay.domains import chess as chess_domain
from selfplay.model import resolve_model
from selfplay.sft import SFTConfig, fine_tune
from selfplay.terminal import ThirdPartyOutput, cpu_name

RESULTS = Path("bench/results/sft_micro_batch.json")
BATCH = 8


def examples(count: int) -> list[dict]:
    config = SFTConfig(examples=count, positions="random:3,mate_in_one:1")
    rows = chess_domain.train_rows(config, chess_domain.eval_rows(SFTConfig()))
    rng = random.Random(0)
    out = []
    for row in rows:
        board = chess.Board(row["fen"])
        move = board.san(rng.choice(list(board.legal_moves)))
        out.append({"prompt": row["prompt"], "completion": [{"role": "assistant", "content": move}]})
    return out


def measure(args, sizes: list[int], console) -> dict:
    data = examples(args.examples)
    model = resolve_model("SmolLM2-135M-Instruct")
    tokenizer = AutoTokenizer.from_pretrained(model)
    seconds = {size: [] for size in sizes}
    for round_ in range(args.rounds):
        for size in sizes if round_ % 2 == 0 else sizes[::-1]:
            with tempfile.TemporaryDirectory() as out:
                _, train_seconds = fine_tune(model, data, Path(out), tokenizer, learning_rate=2e-4, epochs=1,
                                             batch_size=BATCH, lora_rank=16, seed=0, console=console,
                                             micro_batch=size)
            step = train_seconds / (len(data) / BATCH)
            seconds[size].append(step)
            console.print(f"micro-batch {size}: {step:.2f} s a step", highlight=False)
    base = statistics.median(seconds[2])
    return {"cpu": cpu_name(), "examples": len(data), "batch": BATCH,
            "seconds_per_step": {str(size): values for size, values in seconds.items()},
            "speed_vs_micro_batch_2": {str(size): base / statistics.median(values) for size, values in seconds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--sizes", default="8,2,1")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    try:
        sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes {args.sizes!r}: comma-separated whole numbers, e.g. 8,2,1")
    if 2 not in sizes or any(size < 1 or BATCH % size for size in sizes):
        parser.error(f"--sizes must include 2 (the baseline) and divide {BATCH}")
    with ThirdPartyOutput() as output:
        result = measure(args, sizes, output.console)
    for size, ratio in result["speed_vs_micro_batch_2"].items():
        print(f"micro-batch {size}: median {statistics.median(result['seconds_per_step'][size]):.2f} s a step, "
              f"{ratio:.2f}x micro-batch 2's speed")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
