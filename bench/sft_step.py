"""Seconds per optimizer step of the warm start's fine-tune (`selfplay.sft.fine_tune`), by variant.

    python bench/sft_step.py [--examples 48] [--variants all-positions,micro-batch-8,micro-batch-1] [--rounds 2]

The same examples (the default warm start's positions: playouts and generated mates in one, each answered with a
random legal move; the answers do not change the cost), 8 examples per optimizer step, the default model and LoRA.
Each variant runs beside the default (micro-batch 2, TRL's fused LM head over the answer's tokens only), `--rounds`
times in alternating order (these machines are noisy):

- `all-positions`: TRL's own CPU path, its LM head over every position, prompt included (the default before
  2026-12-03); its losses must equal the default's (the bench checks);
- `micro-batch-N`: N examples a forward pass instead of 2.

Prints each run and the median seconds per step of each variant against the default's;
bench/results/sft_step.json. TRL's and transformers' own output goes to a log file in the temp dir, as the CLI's does.
"""

import argparse
import contextlib
import json
import random
import statistics
import tempfile
from pathlib import Path
from unittest import mock

import chess
import trl.trainer.utils as trl_utils
from transformers import AutoTokenizer

from selfplay.domains import chess as chess_domain
from selfplay.model import resolve_model
from selfplay.sft import SFTConfig, fine_tune
from selfplay.terminal import ThirdPartyOutput, cpu_name

RESULTS = Path("bench/results/sft_step.json")
BATCH = 8
TRL_USE_TRITON = trl_utils._use_triton  # TRL's own choices, before selfplay.trl_seam replaces them
TRL_HEAD = trl_utils._ChunkedLogProbFunction


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


def variant_settings(name: str) -> tuple[int, contextlib.AbstractContextManager]:
    """(micro-batch, context to run the fine-tune in) of a variant name; ValueError if it is not one."""
    if name == "default":
        return 2, contextlib.nullcontext()
    if name == "all-positions":
        def trl_choice():
            trl_utils._use_triton, trl_utils._ChunkedLogProbFunction = TRL_USE_TRITON, TRL_HEAD
        return 2, mock.patch("selfplay.trl_seam.cpu_lm_head", trl_choice)
    size = name.removeprefix("micro-batch-")
    if size.isdigit() and int(size) > 0 and BATCH % int(size) == 0:
        return int(size), contextlib.nullcontext()
    raise ValueError(name)


def measure(args, variants: list[str], console) -> dict:
    data = examples(args.examples)
    model = resolve_model("SmolLM2-135M-Instruct")
    tokenizer = AutoTokenizer.from_pretrained(model)
    seconds, losses = {name: [] for name in variants}, {}
    for round_ in range(args.rounds):
        for name in variants if round_ % 2 == 0 else variants[::-1]:
            micro_batch, context = variant_settings(name)
            with tempfile.TemporaryDirectory() as out, context:
                losses[name], train_seconds = fine_tune(model, data, Path(out), tokenizer, learning_rate=2e-4, epochs=1,
                                                        batch_size=BATCH, lora_rank=16, seed=0, console=console,
                                                        micro_batch=micro_batch)
            step = train_seconds / (len(data) / BATCH)
            seconds[name].append(step)
            console.print(f"{name}: {step:.2f} s a step", highlight=False)
    base = statistics.median(seconds["default"])
    result = {"cpu": cpu_name(), "examples": len(data), "batch": BATCH,
              "seconds_per_step": seconds,
              "speed_vs_default": {name: base / statistics.median(values) for name, values in seconds.items()}}
    if "all-positions" in losses:
        difference = max(abs(a - b) for a, b in zip(losses["default"], losses["all-positions"], strict=True))
        result["all_positions_loss_difference"] = difference
        if difference > 1e-3:
            raise SystemExit(f"the default's losses differ from the all-positions ones by {difference:.2g}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--variants", default="all-positions,micro-batch-8,micro-batch-1")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    variants = ["default"] + [name for name in args.variants.split(",") if name and name != "default"]
    for name in variants:
        try:
            variant_settings(name)
        except ValueError:
            parser.error(f"--variants: unknown {name!r}; known: all-positions, micro-batch-N (N dividing {BATCH})")
    with ThirdPartyOutput() as output:
        result = measure(args, variants, output.console)
    for name, ratio in result["speed_vs_default"].items():
        print(f"{name:>14}: median {statistics.median(result['seconds_per_step'][name]):5.2f} s a step, "
              f"{ratio:.2f}x the default's speed")
    if "all_positions_loss_difference" in result:
        print(f"losses: all-positions and the default differ by at most {result['all_positions_loss_difference']:.1e}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
