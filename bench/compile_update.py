"""Does `torch.compile` pay for its start in the update? The default model under LoRA, eager against compiled.

    python bench/compile_update.py [--steps 12] [--variants eager,layers,model,eager]

A micro-batch as the warm start's fine-tune runs it: 2 sequences of 176-215 tokens (chess prompts' lengths, varied
from step to step as theirs are, so a compiled graph must take any length), forward through the default model with
LoRA r=16 on every linear layer, the LM head over the last 6 positions (the answer's), backward, AdamW. Each variant
runs in its own process, in the order given (eager twice by default: the box's noise):

- `eager`: as the loop runs it;
- `layers`: each decoder layer compiled (`module.compile(dynamic=True)`; regional compilation, the compile is
  reused across layers);
- `model`: the whole decoder compiled (`dynamic=True`).

Prints each variant's first step (the compile), the median of the later steps, and against the first eager run:
the steady ratio and the micro-batches the compile needs to pay for itself (the default run has ~540: 125
fine-tune steps and 20 GRPO iterations of 4 micro-batches each). bench/results/compile_update.json.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path("bench/results/compile_update.json")
LENGTHS = [190, 201, 176, 215, 188, 199, 181, 207, 193, 185, 210, 178, 196, 203, 183, 212]


def run_variant(variant: str, steps: int) -> list[float]:
    """The seconds of each step of `variant`, in this process."""
    import warnings

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from selfplay.model import fetch_default_model

    warnings.filterwarnings("ignore")
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(fetch_default_model()), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    decoder, head = model.base_model.model.model, model.base_model.model.lm_head
    if variant == "layers":
        for layer in decoder.layers:
            layer.compile(dynamic=True)
    elif variant == "model":
        decoder.compile(dynamic=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    seconds = []
    for length in (LENGTHS * (steps // len(LENGTHS) + 1))[:steps]:
        ids = torch.randint(0, head.out_features, (2, length))
        start = time.perf_counter()
        logits = head(decoder(input_ids=ids).last_hidden_state[:, -6:])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, -6:].reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--variants", default="eager,layers,model,eager")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process: run this variant, print its seconds
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_variant(args.one, args.steps)))
        return
    from selfplay.terminal import cpu_name

    runs = []
    for variant in args.variants.split(","):
        child = subprocess.run([sys.executable, __file__, "--one", variant, "--steps", str(args.steps)],
                               capture_output=True, text=True, check=True)
        seconds = json.loads(child.stdout.strip().splitlines()[-1])
        runs.append({"variant": variant, "first_s": seconds[0], "steady_s": statistics.median(seconds[2:]),
                     "seconds": seconds})
    eager = runs[0]
    print(f"{'variant':8} {'first step':>10} {'steady':>8} {'vs eager':>9} {'pays after':>11}")
    for run in runs:
        run["ratio"] = eager["steady_s"] / run["steady_s"]
        saved = eager["steady_s"] - run["steady_s"]
        run["pays_after"] = (run["first_s"] - eager["first_s"]) / saved if saved > 0 else None
        pays = f"{run['pays_after']:.0f} steps" if run["pays_after"] is not None else "never"
        print(f"{run['variant']:8} {run['first_s']:9.1f}s {run['steady_s']:7.2f}s {run['ratio']:8.2f}x {pays:>11}")
    RESULTS.write_text(json.dumps({"cpu": cpu_name(), "steps": args.steps, "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
