"""The update moves probability the right way: on a toy task where one answer (a single first token) is always
rewarded, the tiny model's probability of giving it rises within a few iterations of the real loop (real vLLM
sampling, real TRL GRPO, the LoRA adapter hot-loaded between iterations)."""

from pathlib import Path

import pytest

from selfplay.config import make_config
from selfplay.domains import Domain, Rewards

PROMPT = [{"role": "user", "content": "Name one chess piece."}]


class ToyDomain(Domain):
    """Eight copies of one prompt; the answer whose first token is `rewarded_token` scores 1, any other 0."""

    name = "toy"
    EVAL_METRICS = {"rewarded_answer": "rewarded"}
    rewarded_token = -1  # set by the test

    def train_rows(self, config, held_out):
        return [{"prompt": PROMPT}] * 8

    def eval_rows(self, config):
        return []

    def rewards(self, config):
        def rewarded_answer(prompts, completions, *, completion_ids, **kwargs):
            return [float(bool(ids) and ids[0] == ToyDomain.rewarded_token) for ids in completion_ids]

        return Rewards([rewarded_answer], [1.0])


def first_token_probs(model, tokenizer):
    import torch

    from selfplay.train import encode_prompt

    with torch.no_grad():
        return torch.softmax(model(torch.tensor([encode_prompt(tokenizer, PROMPT)])).logits[0, -1].float(), dim=-1)


@pytest.fixture(scope="module")
def peaked_tiny_model(tiny_model, tmp_path_factory):
    """The tiny random model with its final norm scaled up: the same weights, but one first token about one time
    in seven (under a near-uniform distribution over 49k tokens, no answer is ever sampled twice)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        model.model.norm.weight.mul_(9.0)
    path = tmp_path_factory.mktemp("peaked-tiny")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(path)
    return str(path)


@pytest.mark.slow
def test_grpo_raises_the_probability_of_the_rewarded_answer(peaked_tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfplay import loop

    tokenizer = AutoTokenizer.from_pretrained(peaked_tiny_model)
    base = AutoModelForCausalLM.from_pretrained(peaked_tiny_model)
    probs = first_token_probs(base, tokenizer)
    rewarded = int(probs.argmax())
    before = probs[rewarded].item()
    assert 0.05 < before < 0.3  # sampled in some of a group's 8 answers, not all: the group has spread

    ToyDomain.rewarded_token = rewarded
    config = make_config(domain="test_learning_direction:ToyDomain", model=peaked_tiny_model, runs_dir=str(tmp_path),
                         run="toy", steps=4, prompts_per_step=2, num_generations=8, micro_batch_size=8,
                         learning_rate=0.01, temperature=1.0, max_completion_length=2)
    loop.run_loop(config)
    trained = PeftModel.from_pretrained(base, Path(tmp_path) / "toy" / "adapters" / "final")
    after = first_token_probs(trained, tokenizer)[rewarded].item()
    assert after > before + 0.15, (before, after)
