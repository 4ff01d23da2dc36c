"""The trainer's heap over many default GRPO updates, the packed length rounded up (`selfplay.shared_prefix
.PACKED_LENGTH_STEP`, the default) and not.

    python bench/update_growth.py [--updates 30] [--seed 0]

Each variant runs in a process of its own (a fresh heap), under tcmalloc as `selfplay loop` does: `--updates`
optimizer steps of the default model (LoRA r=16, bfloat16 autocast where the CPU has it) through
`shared_prefix_logps`, each of 2 micro-batches of 2 chess groups, drawn from `--seed` (the same draws for both): 4
prompts of 77-166 tokens (the default prompt's range) left-padded to the longest, as TRL pads a generation batch, and 8
answers of 7-9 tokens each, right-padded. Printed and written to bench/results/update_growth.json: seconds an update
(mean after the first), system seconds and page faults over the updates after the first, and the RSS after the first
and the last update.
"""

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS = {"rounded (default)": 0, "exact lengths": 1}  # PACKED_LENGTH_STEP (0: as it is)


def rss_gb() -> float:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1e6


def run_updates(updates: int, seed: int, length_step: int) -> dict:
    import torch

    from selfplay import shared_prefix
    from update_parts import default_update_model

    if length_step:
        shared_prefix.PACKED_LENGTH_STEP = length_step
    model, bf16 = default_update_model()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    draw = random.Random(seed)
    seconds, rss, before = [], [], resource.getrusage(resource.RUSAGE_SELF)
    for update in range(updates):
        prompts = [torch.randint(100, 40000, (draw.randint(77, 166),)) for _ in range(4)]
        answers = [[torch.randint(100, 40000, (draw.choice([7, 9, 9, 9]),)) for _ in range(8)] for _ in prompts]
        width, keep = max(map(len, prompts)), max(len(a) for group in answers for a in group)
        rows = [(p, a) for p, group in zip(prompts, answers) for a in group]
        ids = torch.zeros(len(rows), width + keep, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, (prompt, answer) in enumerate(rows):
            ids[row, width - len(prompt):width], ids[row, width:width + len(answer)] = prompt, answer
            mask[row, width - len(prompt):width + len(answer)] = 1
        if update == 1:
            before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        for micro in (slice(0, 16), slice(16, 32)):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logps, _ = shared_prefix.shared_prefix_logps(model, ids[micro], mask[micro], keep, [(0, 8), (8, 16)],
                                                             True)
            (-(logps * torch.linspace(-1, 1, 16)[:, None]).mean()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - start)
        rss.append(rss_gb())
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds_an_update": sum(seconds[1:]) / (updates - 1), "system_seconds": after.ru_stime - before.ru_stime,
            "page_faults": after.ru_minflt - before.ru_minflt, "rss_gb_first": rss[0], "rss_gb_last": rss[-1],
            "seconds": seconds, "rss_gb": rss}


def main() -> None:
    from selfplay import allocator
    from selfplay.terminal import cpu_name

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--length-step", type=int, help=argparse.SUPPRESS)  # a variant's own process
    parser.add_argument("--out", default="bench/results/update_growth.json")
    args = parser.parse_args()
    if args.updates < 2:
        parser.error(f"--updates {args.updates}: at least 2")
    allocator.reexec_with_tcmalloc()
    if args.length_step is not None:
        print(json.dumps(run_updates(args.updates, args.seed, args.length_step)))
        return
    print(f"update_growth: {args.updates} updates for each of {len(VARIANTS)} variants (a few minutes)", flush=True)
    results = {"cpu": cpu_name(), "updates": args.updates, "seed": args.seed, "variants": {}}
    for name, step in VARIANTS.items():
        command = [sys.executable, __file__, "--updates", str(args.updates), "--seed", str(args.seed),
                   "--length-step", str(step)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"update_growth: the {name} variant failed:\n{done.stderr[-2000:]}")
        results["variants"][name] = json.loads(done.stdout.strip().splitlines()[-1])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"{results['cpu']}, {args.updates} default updates")
    print(f"  {'':<18} {'s/update':>9} {'sys s':>7} {'faults':>8} {'RSS first':>10} {'RSS last':>9}")
    for name, r in results["variants"].items():
        print(f"  {name:<18} {r['seconds_an_update']:9.3f} {r['system_seconds']:7.2f} {r['page_faults']:8d} "
              f"{r['rss_gb_first']:9.2f}G {r['rss_gb_last']:8.2f}G")


if __name__ == "__main__":
    main()
