"""The loop end to end on a tiny random Llama: real vLLM (CPU), real TRL GRPOTrainer, real Stockfish.

The random model never names a legal move, so the chess rewards alone would give every group zero spread and no
gradient; the test domain (conftest `dense_chess_domain`) adds one dense reward next to the real Stockfish ones.
"""

import json
import math
from pathlib import Path

import pytest
from dense_domain import DENSE

from selfplay.config import make_config
from selfplay.domains import chess as chess_domain

LOGPROB_TOLERANCE = 2e-3  # max |vLLM - trainer| per token, both float32


@pytest.fixture(scope="module")
def tiny_run(tiny_model, tmp_path_factory):
    from selfplay import loop

    config = make_config(
        domain=DENSE,
        model=tiny_model,
        warm_start=0,
        runs_dir=str(tmp_path_factory.mktemp("runs")),
        run="tiny",
        steps=2,
        prompts_per_step=2,
        num_generations=4,
        micro_batch_size=4,
        learning_rate=0.05,
        train_positions=8,
        eval_positions=4,
        engine_limit="depth=4",
    )
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
    assert all(s["prompt"] == chess_domain.position_prompt(s["fen"]) for s in samples)  # each with its position
    assert set(samples[0]["rewards"]) == {
        "engine_reward", "rank_reward", "legal_move_reward", "best_move_reward", "solve_reward", "format_reward",
        "score_loss", "move_chars_reward",
    }
    for iteration in (1, 2):  # advantages are centred within each group
        advantages = [s["advantage"] for s in samples if s["iteration"] == iteration]
        assert abs(sum(advantages[:4])) < 1e-3 and abs(sum(advantages[4:])) < 1e-3
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert evaluation == results and evaluation["before"]["n"] == evaluation["after"]["n"] == 8  # 4 playouts, 4 mates
    assert evaluation["after"]["policy_version"] == 2
    after = evaluation["after"]
    assert set(after["sets"]) == {"playouts", "mate_in_one"}
    for metric in ("skill", "random_legal", "greedy_one_ply", "engine_reward"):  # per row, with each set's interval
        scores = after["scores"][metric]
        assert len(scores) == 8
        for name, rows in (("playouts", scores[:4]), ("mate_in_one", scores[4:])):
            mean, low, high = after["sets"][name][metric]
            assert low <= mean <= high and mean == pytest.approx(sum(rows) / 4)
    assert after["skill"] == pytest.approx(after["engine_reward"] - after["random_legal"])
    assert after["sets"]["mate_in_one"]["solve_reward"][0] in (0.0, 0.25, 0.5, 0.75, 1.0)  # bm: the mating moves
    change = evaluation["change"]["playouts"]["random_legal"]
    assert change == [0.0, 0.0, 0.0]  # the references do not depend on the policy
    assert {"v1", "v2", "final"} <= {p.name for p in (run_dir / "adapters").iterdir()}


@pytest.mark.slow
def test_the_parts_of_each_iteration_sum_to_its_wall_time(tiny_run):
    from selfplay.step_time import PARTS

    run_dir, _ = tiny_run
    for m in read_jsonl(run_dir / "metrics.jsonl"):
        for part in ("prefill", "decode", "rewards", "forward", "backward", "optimizer", "sync", "other"):
            assert m[f"time/{part}_s"] > 0, part
        assert m["time/eval_s"] == 0  # no --eval-every
        parts = sum(m[f"time/{part}_s"] for part in PARTS)
        assert parts + m["time/unmeasured_s"] == pytest.approx(m["time/step_s"])
        assert abs(parts - m["time/step_s"]) <= 0.05 * m["time/step_s"]  # the parts hold the wall time, within 5%
    assert read_jsonl(run_dir / "metrics.jsonl")[1]["time/between_s"] > 0  # the checkpoint, between iterations


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
    prompt_ids = encode_prompt(tokenizer, chess_domain.eval_rows(make_config(eval_positions=1))[0]["prompt"])
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


@pytest.mark.slow
def test_full_finetune_changes_every_weight_and_vllm_serves_them(tiny_model, tmp_path):
    import torch
    from safetensors.torch import load_file

    from selfplay import loop

    config = make_config(
        domain=DENSE, model=tiny_model, runs_dir=str(tmp_path), run="full", full_finetune=True, warm_start=0, steps=1,
        prompts_per_step=2, num_generations=4, micro_batch_size=4, learning_rate=0.05, train_positions=4,
        eval_positions=2, engine_limit="depth=4",
    )
    results = loop.run_loop(config)
    before = load_file(Path(tiny_model) / "model.safetensors")
    after = load_file(tmp_path / "full" / "final" / "model.safetensors")
    assert not torch.equal(before["model.layers.0.mlp.down_proj.weight"], after["model.layers.0.mlp.down_proj.weight"])
    assert results["after"]["policy_version"] == 1 and results["after"]["n"] == 4  # 2 playouts, 2 mates in one


@pytest.mark.slow
def test_one_iteration_on_the_real_default_model(default_model, tmp_path):
    from selfplay.loop import run_loop

    config = make_config(
        runs_dir=str(tmp_path), run="real", warm_start=0, steps=1, prompts_per_step=1, num_generations=4,
        micro_batch_size=4, train_positions=4, eval_positions=2,
    )
    results = run_loop(config)
    run_dir = tmp_path / "real"
    [metrics] = read_jsonl(run_dir / "metrics.jsonl")
    assert metrics["iteration"] == 1 and math.isfinite(metrics["train/loss"])
    assert 0.0 <= metrics["reward/engine_reward"] <= 1.0
    samples = read_jsonl(run_dir / "samples.jsonl")
    assert len(samples) == 4 and all(s["prompt"] == chess_domain.position_prompt(s["fen"]) for s in samples)
    assert results["after"]["policy_version"] == 1
    assert (run_dir / "adapters" / "final" / "adapter_model.safetensors").is_file()


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA GPU")
def test_training_step_on_cuda(tiny_model, dense_chess_domain, tmp_path):
    """The same trainer code on CUDA, with TRL's HF generation (the GPU machines here have no vLLM)."""
    import torch
    from datasets import Dataset

    from selfplay.train import build_trainer

    config = make_config(domain=DENSE, model=tiny_model, steps=1, prompts_per_step=2, num_generations=4,
                         learning_rate=0.05)
    rewards = dense_chess_domain.rewards(config)
    funcs, weights = rewards.funcs, rewards.weights
    dataset = Dataset.from_list(chess_domain.train_rows(make_config(train_positions=4), []))
    trainer = build_trainer(config, tiny_model, dataset, funcs, weights, None, tmp_path, {}, [])
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    rewards.close()
    assert next(trainer.model.parameters()).device.type == "cuda"
    changed = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p.detach(), before[n])]
    assert changed


@pytest.mark.slow
def test_warm_start_fine_tunes_then_grpo_continues_from_the_fine_tuned_model(tiny_model, tmp_path):
    from selfplay import loop

    config = make_config(
        domain=DENSE, model=tiny_model, runs_dir=str(tmp_path), run="warm", warm_start=4, steps=1, prompts_per_step=2,
        num_generations=4, micro_batch_size=4, learning_rate=0.05, train_positions=4, eval_positions=2,
        engine_limit="depth=4",
    )
    results = loop.run_loop(config)
    run_dir = tmp_path / "warm"
    assert json.loads((run_dir / "warm" / "sft.json").read_text())["examples"] == 4
    assert [r["label"] for r in read_jsonl(run_dir / "eval.jsonl")] == ["before", "fine-tuned", "after"]
    adapter = json.loads((run_dir / "adapters" / "final" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(run_dir / "warm" / "model")  # GRPO trained on top of it
    assert results["after"]["policy_version"] == 1 and "playouts" in results["change"]


@pytest.mark.parametrize("keep, left", [(2, ["v3", "v4"]), (1, ["v4"]), (0, ["v1", "v2", "v3", "v4"])])
def test_adapter_versions_beyond_keep_go_before_the_next_is_saved(tmp_path, keep, left):
    """The newest `keep` versions stay on disk (0: all); the old ones are deleted before a new one is written, so
    that its files reuse the pages theirs gave back."""
    from selfplay.train import SyncPolicy

    on_disk_at_save = []

    class FakeAdapter:  # a PEFT model's save_pretrained, writing a stand-in file
        def save_pretrained(self, path):
            on_disk_at_save.append(sorted(p.name for p in tmp_path.iterdir()))
            path.mkdir()
            (path / "adapter_model.safetensors").write_bytes(b"weights")

    sync = SyncPolicy(policy=None, adapters_dir=tmp_path, stats={}, keep=keep)
    for version in range(1, 5):
        sync._save(FakeAdapter(), tmp_path / f"v{version}")
    assert sorted(p.name for p in tmp_path.iterdir()) == left
    if keep:
        assert all(len(names) <= keep - 1 for names in on_disk_at_save)
