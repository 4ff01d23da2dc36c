"""Where the default chess step's seconds go, next to what this machine could do at best.

    python bench/step_profile.py [--steps 3] [--model runs/<sft run>/model] [--grpo bf16=false ...] [--atomic-adds]
                                 [--prefix-cache] [--micro-batch-size N]

Runs the default chess iteration (4 prompts x 8 samples, <= 8 new tokens, LoRA r=16, vLLM + TRL, real Stockfish;
the built-in SmolLM2-135M-Instruct unless `--model`: the default loop trains its engine fine-tune) for one warm-up
and `--steps` timed iterations, and prints the median seconds of each part (selfplay.step_time) beside its limit:

- the box's matmul peak, measured by torch in this run (float32 and bfloat16, all cores, 2048x2048 products);
- each compute part's FLOPs, counted from the model's shapes and the batch (prompt and answer tokens): prefill once
  per distinct prompt (vLLM's prefix cache), decode per sampled token, the update's forward over each group's prompt
  once plus every answer (selfplay.shared_prefix) and its backward as much again (activation gradients: the base
  weights are frozen, LoRA's own gradients are ~1% of it). Matmuls only, LoRA's own products left out;
- limit = FLOPs / peak: generation at the float32 peak (vLLM's precision on CPU), the update at the box's best
  (bfloat16 where the CPU has it: TRL's autocast; `--grpo bf16=false` trains in float32 against the same limit).
  Rewards, sync and the rest have no FLOP limit: they count against it.

The results also hold each timed iteration's wall, forward and backward seconds, and the process's RSS, page faults
and system seconds in it (the trainer's heap grows in bursts, each new page a fault: `bench/update_growth.py`).

`--atomic-adds` turns torch's deterministic mode back off after the trainer is built (selfplay.train
.sum_gradients_in_order): the backward's index adds then run as parallel atomics, as before 2026-12-03; it times what
the fixed order, which exact resumes need, costs. `--prefix-cache` scores the update's groups through a repeated
key/value cache of their prompt (selfplay.shared_prefix.cached_logps, the chess update's way before 2026-12-03, code's
way) instead of packed into one sequence a group.

It runs under tcmalloc where the machine has it, as `selfplay loop` does (selfplay.allocator; SELFPLAY_MALLOC=glibc
for glibc's malloc). Results go to bench/results/step_profile.json (or --out); vLLM's, TRL's and transformers' own
output to a log file in the temp dir, as the CLI's does.
"""

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import psutil


def matmul_peak(dtype, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` square products of `size` in `dtype`."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.matmul(a, b)  # warm-up: the kernels' one-time setup
    best = min(timed(lambda: torch.matmul(a, b)) for _ in range(repeats))
    return 2 * size**3 / best


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


class Shapes:
    """Matmul FLOPs of one token through a decoder of this config, given how many tokens it attends to."""

    def __init__(self, config):
        self.layers, self.d, self.ff, self.vocab = (config.num_hidden_layers, config.hidden_size,
                                                    config.intermediate_size, config.vocab_size)
        kv = config.num_key_value_heads * (config.hidden_size // config.num_attention_heads)
        self.projections = 2 * self.layers * (self.d * (2 * self.d + 2 * kv) + 3 * self.d * self.ff)
        self.head = 2 * self.d * self.vocab

    def tokens(self, first: int, count: int) -> float:
        """Layers for `count` tokens at positions first+1 .. first+count (each attends to those up to itself)."""
        attended = count * first + count * (count + 1) / 2
        return count * self.projections + 4 * self.layers * self.d * attended


def step_flops(shapes: Shapes, prompts: list[int], answers: list[list[int]]) -> dict:
    """FLOPs of each compute part for groups of answers (token counts) to prompts (token counts)."""
    prefill = sum(shapes.tokens(0, p) + shapes.head for p in prompts)
    decode = sum(shapes.tokens(p, c) + c * shapes.head for p, group in zip(prompts, answers) for c in group)
    forward = sum(shapes.tokens(0, p - 1) + shapes.head  # the group's prompt once, its cache kept
                  + sum(shapes.tokens(p - 1, 1 + c) + (1 + c) * shapes.head for c in group)
                  for p, group in zip(prompts, answers))
    return {"prefill": prefill, "decode": decode, "forward": forward, "backward": forward}


def measure(model: str, steps: int, grpo: list[str], atomic_adds: bool = False, prefix_cache: bool = False,
            micro_batch_size: int | None = None) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoConfig, AutoTokenizer, TrainerCallback

    from selfplay import shared_prefix, step_time
    from selfplay.config import make_config
    from selfplay.domains import chess as chess_domain
    from selfplay.policy import VLLMPolicy
    from selfplay.train import build_trainer, encode_prompt
    from selfplay.trl_seam import last_batch

    config = make_config(model=model, steps=steps + 1, grpo=grpo, micro_batch_size=micro_batch_size)
    tokenizer = AutoTokenizer.from_pretrained(model)
    rows = chess_domain.train_rows(config, [])
    rewards = chess_domain.rewards(config)
    policy = VLLMPolicy(model, lora_rank=config.lora_rank, seed=config.seed,
                        answer_tokens=config.max_completion_length)
    stats: dict = {}
    iterations: list[dict] = []

    class Capture(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                batch = last_batch(trainer)
                prompts = [len(encode_prompt(tokenizer, p)) for p in list(batch["prompt"])[:: config.num_generations]]
                answers = [len(tokenizer(c[0]["content"] if isinstance(c, list) else c)["input_ids"]) + 1
                           for c in batch["completion"]]  # + the end-of-turn token
                groups = [answers[i:i + config.num_generations] for i in range(0, len(answers), config.num_generations)]
                usage = resource.getrusage(resource.RUSAGE_SELF)
                iterations.append({**step_time.finish(stats), "prompts": prompts, "answers": groups,
                                   "rss_gb": psutil.Process().memory_info().rss / 1e9,
                                   "page_faults": usage.ru_minflt, "system_s": usage.ru_stime})

    trainer = build_trainer(config, model, Dataset.from_list(rows), rewards.funcs, rewards.weights, policy,
                            Path(tempfile.mkdtemp(prefix="bench-step-")), stats, [Capture()])
    trainer.args.save_strategy = "no"  # checkpoints fall between iterations: not part of a step
    if atomic_adds:
        torch.use_deterministic_algorithms(False)
    if prefix_cache:
        shared_prefix.packed_logps = shared_prefix.cached_logps
    trainer.train()
    rewards.close()
    policy.close()

    timed_steps = iterations[1:]
    seconds = {part: statistics.median(it[f"time/{part}_s"] for it in timed_steps) for part in step_time.PARTS}
    seconds["unmeasured"] = statistics.median(it["time/unmeasured_s"] for it in timed_steps)
    wall = statistics.median(it["time/step_s"] for it in timed_steps)
    shapes = Shapes(AutoConfig.from_pretrained(model))
    flops = [step_flops(shapes, it["prompts"], it["answers"]) for it in timed_steps]
    flops = {part: statistics.median(f[part] for f in flops) for part in flops[0]}
    peaks = {"float32": matmul_peak(torch.float32)}
    peaks["bfloat16"] = matmul_peak(torch.bfloat16) if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
    update_peak = max(peak for peak in peaks.values() if peak)  # the machine's best, whatever the run chose
    limits = {"prefill": flops["prefill"] / peaks["float32"], "decode": flops["decode"] / peaks["float32"],
              "forward": flops["forward"] / update_peak, "backward": flops["backward"] / update_peak}
    return {
        "model": model,
        "steps": steps,
        "grpo": grpo,
        "gradient_adds": "parallel atomic" if atomic_adds else "fixed order",
        "shared_prompts": "key/value cache" if prefix_cache else "packed",
        "micro_batch_size": config.micro_batch_size,
        "wall_seconds": wall,
        "seconds": seconds,
        "flops": flops,
        "peak_flops_per_s": peaks,
        "update_precision": "bfloat16 autocast" if trainer.args.bf16 else "float32",
        "limit_seconds": limits,
        "step_limit_seconds": sum(limits.values()),
        "times_the_limit": {part: seconds[part] / limit for part, limit in limits.items()},
        "step_times_the_limit": wall / sum(limits.values()),
        "iterations": [{"step_s": it["time/step_s"], "forward_s": it["time/forward_s"],
                        "backward_s": it["time/backward_s"], "rss_gb": it["rss_gb"],
                        "page_faults": it["page_faults"] - before["page_faults"],
                        "system_s": it["system_s"] - before["system_s"]}
                       for before, it in zip(iterations, timed_steps)],
        "batch": {"prompt_tokens": [it["prompts"] for it in timed_steps],
                  "answer_tokens": [it["answers"] for it in timed_steps]},
    }


def main() -> None:
    from selfplay import allocator
    from selfplay.model import fetch_default_model
    from selfplay.terminal import ThirdPartyOutput, cpu_name

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed iterations, after one warm-up")
    parser.add_argument("--model", help="the model the step trains (default: the built-in one)")
    parser.add_argument("--grpo", action="append", default=[], help="TRL GRPOConfig KEY=VALUE, as the loop's --grpo")
    parser.add_argument("--atomic-adds", action="store_true", help="the backward's index adds as parallel atomics")
    parser.add_argument("--prefix-cache", action="store_true", help="groups through a repeated prompt cache")
    parser.add_argument("--micro-batch-size", type=int, help="rows a forward pass (default: the loop's, 16)")
    parser.add_argument("--out", default="bench/results/step_profile.json")
    args = parser.parse_args()
    allocator.reexec_with_tcmalloc()  # as `selfplay loop` runs (SELFPLAY_MALLOC=glibc: glibc's malloc)
    if args.micro_batch_size is not None and (args.micro_batch_size < 1 or 32 % args.micro_batch_size):
        parser.error(f"--micro-batch-size {args.micro_batch_size}: it must divide the step's 32 rows (4 x 8)")
    with ThirdPartyOutput() as output:  # vLLM's, TRL's and transformers' own output: a log file, as the CLI's
        output.console.print(f"step_profile: {args.steps} timed iterations after a warm-up (a few minutes)")
        result = {"cpu": cpu_name(), "allocator": "tcmalloc" if allocator.in_use() else "glibc",
                  **measure(args.model or str(fetch_default_model()), args.steps, args.grpo, args.atomic_adds,
                            args.prefix_cache, args.micro_batch_size)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    peaks = result["peak_flops_per_s"]
    print(f"{result['cpu']}: matmul peak float32 {peaks['float32'] / 1e12:.3f} TFLOP/s, bfloat16 "
          + (f"{peaks['bfloat16'] / 1e12:.3f} TFLOP/s" if peaks["bfloat16"] else "not supported"))
    print(f"{'part':>10} {'seconds':>8} {'GFLOP':>8} {'limit s':>8} {'x limit':>8}")
    for part, secs in result["seconds"].items():
        if part in result["limit_seconds"]:
            print(f"{part:>10} {secs:8.2f} {result['flops'][part] / 1e9:8.0f} {result['limit_seconds'][part]:8.2f} "
                  f"{result['times_the_limit'][part]:8.1f}")
        else:
            print(f"{part:>10} {secs:8.2f} {'':>8} {'':>8} {'':>8}")
    print(f"{'step':>10} {result['wall_seconds']:8.2f} {sum(result['flops'].values()) / 1e9:8.0f} "
          f"{result['step_limit_seconds']:8.2f} {result['step_times_the_limit']:8.1f}")


if __name__ == "__main__":
    main()
