"""Two parts of the GRPO update, each against what it replaced, alternated in one run on the default model.

- attention of the packed groups: `selfplay.shared_prefix.packed_attention` against transformers' SDPA (torch's CPU
  kernel, for the same mask: a float 0/-inf bias since 2026-12-05), in a whole micro-step of the default chess
  update: 2 groups of a 112-token prompt and 8 answers of 8 tokens, LoRA r=16 on the default model, bfloat16
  autocast where the CPU has it, forward and backward;
- the LM head: `selfplay.lm_head` (one pass over the vocabulary) against TRL's `ChunkedLogProbFunction` (its CPU
  tiles), logprobs and entropies of the micro-batch's 128 answer tokens, forward and backward.

Each variant runs `--rounds` times after 2 warm-up rounds, alternating; the medians and their ratio are printed and
written to bench/results/update_parts.json. It runs under tcmalloc, as `selfplay loop` does.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def default_update_model():
    """(the default model with LoRA r=16 as GRPO trains it, whether its update runs under bfloat16 autocast)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from selfplay.model import fetch_default_model
    from selfplay.precision import update_in_bfloat16
    from selfplay.train import frozen_linears_in_bfloat16, sum_gradients_in_order
    from selfplay.trl_seam import cpu_lm_head

    path = str(fetch_default_model())
    bf16 = update_in_bfloat16(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    add_fused_lm_head(model, temperature=1.0, outputs=("log_probs", "entropy"))
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    if bf16:
        frozen_linears_in_bfloat16(model)
    cpu_lm_head()
    sum_gradients_in_order()
    return model, bf16


def default_update(rounds: int) -> dict:
    import torch
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    from selfplay import shared_prefix
    from selfplay.lm_head import FusedLMHead

    model, bf16 = default_update_model()
    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(2):  # groups
        prompt = torch.randint(100, 40000, (112,), generator=generator)
        rows += [torch.cat([prompt, torch.randint(100, 40000, (8,), generator=generator)]) for _ in range(8)]
    ids = torch.stack(rows)
    mask, groups = torch.ones_like(ids), [(0, 8), (8, 16)]
    advantages = torch.linspace(-1, 1, len(rows))[:, None]

    def micro_step() -> float:
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logps, _ = shared_prefix.packed_logps(model, ids, mask, 8, groups, True)
        (-(logps * advantages).mean()).backward()
        return time.perf_counter() - start

    hidden = torch.randn(128, model.config.hidden_size, requires_grad=True)
    targets = torch.randint(0, model.config.vocab_size, (128,), generator=generator)
    weight = model.get_output_embeddings().weight

    def head_step(head) -> float:
        hidden.grad = None
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logps, entropy, *_ = head.apply(hidden, weight, None, targets, 1.0, 32768, None, 1.0,
                                            ("log_probs", "entropy"))
        (logps * torch.linspace(-1, 1, len(targets))).sum().backward()
        return time.perf_counter() - start

    variants = {
        "attention: packed_attention": lambda: AttentionInterface.register(
            "selfplay_packed", shared_prefix.packed_attention) or micro_step(),
        "attention: SDPA": lambda: AttentionInterface.register("selfplay_packed", sdpa_attention_forward)
        or micro_step(),
        "LM head: selfplay.lm_head": lambda: head_step(FusedLMHead),
        "LM head: TRL's CPU tiles": lambda: head_step(ChunkedLogProbFunction),
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(rounds + 2):
        for name, run in variants.items():
            elapsed = run()
            if round_ >= 2:
                seconds[name].append(elapsed)
    AttentionInterface.register("selfplay_packed", shared_prefix.packed_attention)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {"update_precision": "bfloat16 autocast" if bf16 else "float32", "rounds": rounds,
            "median_seconds": medians, "seconds": seconds,
            "speedup": {"attention (micro-step)": medians["attention: SDPA"] / medians["attention: packed_attention"],
                        "LM head": medians["LM head: TRL's CPU tiles"] / medians["LM head: selfplay.lm_head"]}}


def main() -> None:
    from selfplay import allocator
    from selfplay.terminal import ThirdPartyOutput, cpu_name

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds of each variant")
    parser.add_argument("--out", default="bench/results/update_parts.json")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: at least 1")
    allocator.reexec_with_tcmalloc()
    with ThirdPartyOutput() as output:
        output.console.print(f"update_parts: {args.rounds} rounds of each variant, alternated (about a minute)")
        result = {"cpu": cpu_name(), **default_update(args.rounds)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['cpu']}, update in {result['update_precision']}")
    for name, seconds in result["median_seconds"].items():
        print(f"  {name:<30} {seconds * 1000:7.1f} ms")
    for part, ratio in result["speedup"].items():
        print(f"  {part:<30} {ratio:7.2f}x faster")


if __name__ == "__main__":
    main()
