"""What scoring each group while the rest of the batch generates saves, per domain, against scoring after generation.

    python bench/reward_overlap.py [--rounds 4] [--domains chess code] [--chess-model RUN/model]

For each domain, one trainer as the loop builds it (`selfplay.train.build_trainer`, the domain's default batch,
completion length and real rewards: Stockfish for chess, bubblewrap unit tests for code) on the built-in
SmolLM2-135M-Instruct, served by vLLM. For chess, give the engine fine-tune the default loop trains from
(`--chess-model runs/<sft run>/model`): the built-in model's moves are mostly illegal, and an illegal move costs the
engine nothing. Each round generates and scores the same batch (the same seeds) twice, in
alternating order, each with the caches emptied: overlapped (the loop's way: `RewardsDuringGeneration` scores each group in a thread as vLLM
returns it) and sequential (the rollout hands nothing over; TRL's reward call scores the whole batch after
generation). The bench checks that both give the same rewards, and reports the medians of the generate-and-score
time, the reward seconds the trainer still waits for, and the ratio sequential / overlapped.
Results go to bench/results/reward_overlap.json (or --out).
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def empty_caches(rewards, policy) -> None:
    """Each variant pays for the whole batch: vLLM's prefix cache and the engine pool's evaluations are emptied."""
    policy.llm.reset_prefix_cache()
    for resource in rewards.resources:
        for owner in (resource, getattr(resource, "pool", None)):
            if isinstance(getattr(owner, "cache", None), dict):
                owner.cache.clear()


def measure(domain_name: str, rounds: int, model: str | None) -> dict:
    import torch
    from datasets import Dataset

    from selfplay.config import make_config
    from selfplay.domains import get_domain
    from selfplay.model import fetch_default_model
    from selfplay.policy import VLLMPolicy
    from selfplay.train import build_trainer

    model = model or str(fetch_default_model())
    domain = get_domain(domain_name)
    config = make_config(domain=domain_name, steps=rounds, overlap_rewards="on")
    rows = domain.train_rows(config, [])
    rewards = domain.rewards(config)
    policy = VLLMPolicy(model, lora_rank=config.lora_rank, seed=config.seed,
                        answer_tokens=config.max_completion_length)
    stats: dict = {}
    trainer = build_trainer(config, model, Dataset.from_list(rows), rewards.funcs, rewards.weights, policy,
                            Path(tempfile.mkdtemp(prefix="bench-overlap-")), stats, [], domain.stop_strings(config),
                            domain.tools(config))
    rollout, overlap = trainer.rollout_func, trainer.rollout_func.rewards
    timings = {"overlapped": [], "sequential": []}
    waits = {"overlapped": [], "sequential": []}
    completion_tokens = []
    for k in range(rounds + 1):  # round 0 warms up (vLLM's first batch, the sandboxes, the engines)
        batch = rows[(k * config.prompts_per_step) % len(rows):][: config.prompts_per_step]
        inputs = [dict(row) for row in batch for _ in range(config.num_generations)]
        trainer.state.global_step = k  # the rollout seeds by step: both variants sample the same batch
        seen = {}
        for variant in (("overlapped", "sequential") if k % 2 else ("sequential", "overlapped")):
            rollout.rewards = overlap if variant == "overlapped" else None
            stats.clear()
            empty_caches(rewards, policy)
            start = time.perf_counter()
            with torch.no_grad():
                out = trainer._generate_and_score_completions([dict(row) for row in inputs])
            seconds = time.perf_counter() - start
            seen[variant] = out["advantages"].tolist()
            if k:
                timings[variant].append(seconds)
                waits[variant].append(stats.get("time/rewards_s", 0.0))
        if seen["overlapped"] != seen["sequential"]:
            raise SystemExit(f"{domain_name}: overlapped and sequential scoring gave different advantages")
        completion_tokens.append(int(out["completion_mask"].sum()))
    rewards.close()
    policy.close()
    overlapped, sequential = statistics.median(timings["overlapped"]), statistics.median(timings["sequential"])
    return {
        "domain": domain_name,
        "model": model,
        "batch": f"{config.prompts_per_step} prompts x {config.num_generations} samples, "
                 f"<= {config.max_completion_length} tokens",
        "rounds": rounds,
        "completion_tokens_per_batch": statistics.median(completion_tokens),
        "sequential_seconds": sequential,
        "overlapped_seconds": overlapped,
        "reward_wait_sequential_seconds": statistics.median(waits["sequential"]),
        "reward_wait_overlapped_seconds": statistics.median(waits["overlapped"]),
        "saved_seconds": sequential - overlapped,
        "rounds_seconds": timings,
        "ratio": sequential / overlapped,
    }


def main() -> None:
    from selfplay.terminal import cpu_name

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds of each variant (after one warm-up)")
    parser.add_argument("--domains", nargs="+", default=["chess", "code"])
    parser.add_argument("--chess-model", help="the model chess generates with (default: the built-in one)")
    parser.add_argument("--out", default="bench/results/reward_overlap.json")
    args = parser.parse_args()
    results = {"cpu": cpu_name(), "domains": {}}
    for name in args.domains:
        result = measure(name, args.rounds, args.chess_model if name == "chess" else None)
        results["domains"][name] = result
        print(f"{name:>6}: generate+score {result['sequential_seconds']:.2f} s sequential, "
              f"{result['overlapped_seconds']:.2f} s overlapped ({result['ratio']:.2f}x); rewards waited for "
              f"{result['reward_wait_sequential_seconds']:.2f} s -> {result['reward_wait_overlapped_seconds']:.2f} s",
              flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
