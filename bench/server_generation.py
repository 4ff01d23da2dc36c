"""Generation on vLLM's own server (`--vllm-server auto`) against vLLM in the loop's process, in one run.

    python bench/server_generation.py [--rounds 5]

The default model with a LoRA adapter loaded (as in the loop after its first update), the loop's chess prompts:
4 prompts x 8 samples, up to 8 new tokens, temperature 0.8, each round with its own seeds. Each side starts, runs a
warm-up round, then `rounds` timed rounds, and is closed before the other starts. Reported: start-up seconds,
completions per second, the ratio server / in-process, and the share of samples that are the same on both sides
(same seeds, same engine). Results in bench/results/server_generation.json.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from selfplay.terminal import cpu_name


def side(name: str, model: str, adapter: str, prompts: list[list[int]], rounds: int) -> dict:
    from selfplay.policy import VLLMPolicy
    from selfplay.vllm_server import ServerPolicy, VLLMServer

    start = time.perf_counter()
    if name == "in-process":
        policy = VLLMPolicy(model, lora_rank=16)
    else:
        server = VLLMServer(model, lora_rank=16, log_path=Path(tempfile.mkdtemp()) / "server.log")
        policy = ServerPolicy(server.start(), lora_rank=16, server=server)
    policy.load_adapter(adapter, 1)
    startup = time.perf_counter() - start
    try:
        def generate(seed):
            return policy.generate(prompts, n=8, max_tokens=8, temperature=0.8, stop=["\n"], seed=seed)

        generate(10_000)  # warm-up
        start = time.perf_counter()
        samples = [generate(seed * 1_000) for seed in range(rounds)]
        seconds = time.perf_counter() - start
    finally:
        policy.close()
    completions = rounds * len(prompts) * 8
    return {"startup_seconds": startup, "seconds": seconds, "completions_per_s": completions / seconds,
            "samples": [[c.completion_ids for c in group] for groups in samples for group in groups]}


def main() -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfplay.config import make_config
    from selfplay.domains import chess as chess_domain
    from selfplay.model import fetch_default_model
    from selfplay.train import encode_prompt

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model = str(fetch_default_model())
    tokenizer = AutoTokenizer.from_pretrained(model)
    rows = chess_domain.train_rows(make_config(train_positions=4), [])
    prompts = [encode_prompt(tokenizer, row["prompt"]) for row in rows]
    adapter = tempfile.mkdtemp(prefix="bench-adapter-")
    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(model),
                                LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    with torch.no_grad():
        for name, weight in peft_model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.01)
    peft_model.save_pretrained(adapter)
    del peft_model

    results = {name: side(name, model, adapter, prompts, args.rounds) for name in ("in-process", "server")}
    same = [a == b for a, b in zip(results["in-process"].pop("samples"), results["server"].pop("samples"))]
    results.update(
        ratio=results["server"]["completions_per_s"] / results["in-process"]["completions_per_s"],
        same_samples=sum(same) / len(same), rounds=args.rounds, cpu=cpu_name(),
        batch="4 chess prompts x 8 samples, <= 8 new tokens, LoRA r=16 loaded",
    )
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/server_generation.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
