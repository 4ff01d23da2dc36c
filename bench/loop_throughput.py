"""Scored-and-trained completions per minute: our loop (vLLM + LoRA) vs TRL's GRPOTrainer in its default setup.

    python bench/loop_throughput.py [--steps 3] [--prompts 4] [--group 8]

Both sides train the same model (the built-in SmolLM2-135M-Instruct) on the same chess prompts, batch, group size,
completion length, reward functions (real Stockfish) and number of optimizer steps, each in its own process, one
after the other in this run:

- ours: `selfplay.train.build_trainer` with the vLLM policy: generation by vLLM (float32, prefix caching), LoRA
  r=16 through PEFT in micro-batches of two groups (16, chess's default), each group's prompt encoded once for its
  samples (`selfplay.shared_prefix`), the adapter hot-loaded into vLLM after every step;
- TRL default: `GRPOTrainer` with TRL's defaults (its own HF `generate`, full fine-tune, gradient checkpointing,
  bfloat16 autocast); only batch shape, steps, sampling temperature and completion length are set to match.

TRL's update runs under its default bfloat16 autocast (`bf16=True`) on every CPU, even one without bfloat16, where
torch emulates it (on a 2-core EPYC with AVX2 only, TRL's 3 steps had not finished in 25 min); ours in the
precision `selfplay.precision` times as faster.

Ours runs under tcmalloc, as `selfplay loop` does (selfplay.allocator); TRL under its default, glibc's malloc
(`--trl-tcmalloc`: TRL under tcmalloc too, to see how much of the ratio is the allocator).

Throughput counts the training loop (`trainer.train()`); the one-time start (model load, vLLM start) is reported
separately. Results go to bench/results/loop_throughput.json (or --out). Where vLLM is not installed (the GPU
machines of bench/gpu_check.sh), ours generates with HF too, and the JSON says so (`generation`).
"""

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selfplay import allocator


def measure(variant: str, steps: int, prompts: int, group: int) -> dict:
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from selfplay.config import make_config
    from selfplay.domains import chess as chess_domain
    from selfplay.model import fetch_default_model

    start = time.perf_counter()
    model = str(fetch_default_model())
    config = make_config(steps=steps, prompts_per_step=prompts, num_generations=group, train_positions=prompts * steps)
    dataset = Dataset.from_list(chess_domain.train_rows(config, []))
    rewards = chess_domain.rewards(config)
    reward_funcs, weights = rewards.funcs, rewards.weights
    out = Path(tempfile.mkdtemp(prefix=f"bench-{variant}-"))
    generation = "vllm" if importlib.util.find_spec("vllm") else "hf"  # the GPU machines here have no vLLM
    if variant == "ours":
        from selfplay.policy import VLLMPolicy
        from selfplay.train import build_trainer

        policy = VLLMPolicy(model, lora_rank=config.lora_rank, answer_tokens=config.max_completion_length) if (
            generation == "vllm") else None
        trainer = build_trainer(config, model, dataset, reward_funcs, weights, policy, out, {}, [])
    else:
        args = GRPOConfig(
            output_dir=str(out),
            max_steps=steps,
            per_device_train_batch_size=group,
            gradient_accumulation_steps=prompts,
            num_generations=group,
            max_completion_length=config.max_completion_length,
            temperature=config.temperature,
            reward_weights=weights,
            report_to=[],
            save_strategy="no",
            use_cpu=not torch.cuda.is_available(),
        )
        generation = "hf"
        trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=dataset)
    startup = time.perf_counter() - start
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    rewards.close()
    completions = steps * prompts * group
    return {
        "variant": variant,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "generation": generation,
        "completions": completions,
        "train_seconds": seconds,
        "startup_seconds": startup,
        "completions_per_minute": 60 * completions / seconds,
        "completions_per_minute_with_startup": 60 * completions / (seconds + startup),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--trl-tcmalloc", action="store_true", help="TRL's side under tcmalloc too")
    parser.add_argument("--out", default="bench/results/loop_throughput.json")
    parser.add_argument("--variant", choices=["ours", "trl"], help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.variant:
        print("RESULT " + json.dumps(measure(args.variant, args.steps, args.prompts, args.group)), flush=True)
        return
    results = {}
    for variant in ("ours", "trl"):
        cmd = [sys.executable, __file__, "--variant", variant, "--steps", str(args.steps),
               "--prompts", str(args.prompts), "--group", str(args.group)]
        env = allocator.environment() if variant == "ours" or args.trl_tcmalloc else None
        output = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [line for line in output.stdout.splitlines() if line.startswith("RESULT ")]
        if output.returncode != 0 or not lines:
            sys.exit(f"{variant} failed:\n{output.stderr[-3000:]}")
        results[variant] = {**json.loads(lines[-1][len("RESULT "):]), "allocator": "tcmalloc" if (env or {}).get("LD_PRELOAD") else "glibc"}
        print(variant, results[variant], flush=True)
    results["ratio"] = results["ours"]["completions_per_minute"] / results["trl"]["completions_per_minute"]
    results["ratio_with_startup"] = (
        results["ours"]["completions_per_minute_with_startup"] / results["trl"]["completions_per_minute_with_startup"]
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"ours / TRL default = {results['ratio']:.2f}x (with start-up: {results['ratio_with_startup']:.2f}x)")


if __name__ == "__main__":
    main()
