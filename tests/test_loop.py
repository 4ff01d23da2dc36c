"""The loop end to end on a tiny random Llama: real vLLM (CPU), real TRL GRPOTrainer, real Stockfish.

The random model never names a legal move, so the chess rewards alone would give every group zero spread and no
gradient; the test domain adds one dense reward (`move_chars_reward`) next to the real Stockfish ones.
"""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from selfplay.config import LoopConfig
from selfplay.domains import chess as chess_domain

LOGPROB_TOLERANCE = 2e-3  # max |vLLM - trainer| per token, both float32


def move_chars_reward(prompts, completions, **kwargs):
    """Share of characters that can appear in a UCI move: random text has spread, so GRPO gets a gradient."""
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [sum(ch in "abcdefgh12345678" for ch in t) / max(len(t), 1) for t in texts]


def with_dense_reward(*, depth):
    funcs, weights, judge = chess_domain.reward_funcs(depth=depth)
    return [*funcs, move_chars_reward], [*weights, 1.0], judge


TEST_DOMAIN = SimpleNamespace(
    train_rows=chess_domain.train_rows,
    eval_rows=chess_domain.eval_rows,
    reward_funcs=with_dense_reward,
    HEADLINE=chess_domain.HEADLINE,
)


@pytest.fixture(scope="module")
def tiny_run(tiny_model, tmp_path_factory):
    from selfplay import loop

    config = LoopConfig(
        model=tiny_model,
        runs_dir=str(tmp_path_factory.mktemp("runs")),
        run="tiny",
        steps=2,
        prompts_per_step=2,
        num_generations=4,
        micro_batch_size=4,
        learning_rate=0.05,
        train_positions=8,
        eval_positions=4,
        engine_depth=4,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "get_domain", lambda name: TEST_DOMAIN)
        results = loop.run_loop(config)
    return Path(config.runs_dir) / "tiny", results


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_run_dir_holds_config_metrics_samples_and_eval(tiny_run):
    run_dir, results = tiny_run
    assert json.loads((run_dir / "config.json").read_text())["steps"] == 2
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [1, 2]
    assert [m["policy_version"] for m in metrics] == [0, 1]  # iteration 2 sampled from the adapter of update 1
    for m in metrics:
        assert 0.0 <= m["reward/legal_move_reward"] <= 1.0
        assert m["gen/tokens_per_s"] > 0 and m["reward/evals_per_s"] > 0 and m["time/step_s"] > 0
        assert math.isfinite(m["train/loss"])
    samples = read_jsonl(run_dir / "samples.jsonl")
    assert len(samples) == 2 * 2 * 4  # iterations x prompts x group
    assert {s["policy_version"] for s in samples} == {0, 1}
    assert set(samples[0]["rewards"]) == {"engine_reward", "legal_move_reward", "move_chars_reward"}
    for iteration in (1, 2):  # advantages are centred within each group
        advantages = [s["advantage"] for s in samples if s["iteration"] == iteration]
        assert abs(sum(advantages[:4])) < 1e-3 and abs(sum(advantages[4:])) < 1e-3
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert evaluation == results and evaluation["before"]["n"] == evaluation["after"]["n"] == 4
    assert evaluation["after"]["policy_version"] == 2
    assert {"v1", "v2", "final"} <= {p.name for p in (run_dir / "adapters").iterdir()}


@pytest.mark.slow
def test_training_changed_the_adapter(tiny_run):
    from safetensors.torch import load_file

    run_dir, _ = tiny_run
    weights = load_file(run_dir / "adapters" / "final" / "adapter_model.safetensors")
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and any(t.abs().max() > 0 for t in lora_b)  # PEFT starts every lora_B at zero


@pytest.mark.slow
def test_vllm_serves_the_updated_policy(tiny_run, tiny_model):
    """vLLM's logprobs for a completion match the trainer's after the update, and differ from the pre-update ones."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfplay.policy import VLLMPolicy
    from selfplay.train import encode_prompt

    run_dir, _ = tiny_run
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    prompt_ids = encode_prompt(tokenizer, chess_domain.eval_rows(1)[0]["prompt"])
    policy = VLLMPolicy(tiny_model, lora_rank=16)
    try:
        policy.load_adapter(str(run_dir / "adapters" / "final"), 7)
        completion = policy.generate([prompt_ids], n=1, max_tokens=8, temperature=1.0)[0][0]
    finally:
        policy.close()

    def trainer_logprobs(model):
        ids = torch.tensor([prompt_ids + completion.completion_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt_ids) - 1 : -1]
        return torch.log_softmax(logits.float(), -1).gather(-1, ids[0, len(prompt_ids) :, None])[:, 0]

    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    before = trainer_logprobs(base)
    after = trainer_logprobs(PeftModel.from_pretrained(base, run_dir / "adapters" / "final"))
    served = torch.tensor(completion.logprobs)
    assert (served - after).abs().max() < LOGPROB_TOLERANCE
    assert (served - before).abs().max() > 10 * LOGPROB_TOLERANCE
