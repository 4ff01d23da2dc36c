"""The CPU blocks plugin: vLLM's KV cache in blocks of 16 tokens on CPU, a group's samples sharing the prompt's whole
blocks, with the logprobs the trainer's model gives the same tokens; vLLM's 32 where VLLM_PLUGINS leaves it out."""

import pytest
import torch

from selfplay.vllm_cpu_blocks import BLOCK_SIZE, VLLM_BLOCK_SIZE, cpu_block_size


def test_the_block_is_vllms_own_where_its_processes_will_not_load_the_plugin(monkeypatch):
    monkeypatch.delenv("VLLM_PLUGINS", raising=False)
    assert cpu_block_size() == BLOCK_SIZE == 16
    monkeypatch.setenv("VLLM_PLUGINS", "selfplay_cpu_lora,selfplay_cpu_idle")
    assert cpu_block_size() == VLLM_BLOCK_SIZE == 32


@pytest.mark.slow
def test_samples_that_share_16_token_blocks_keep_the_trainers_logprobs(tiny_model):
    """Prompts of 2-3 whole blocks and a 5-token tail, 4 samples each: the samples after the first read the prompt's
    blocks from the prefix cache and compute the tail themselves (vLLM's `vec16` kernels). Each sampled token's
    logprob is the float32 trainer model's, as with vLLM's own 32-token blocks (tests/test_tools.py's tolerance)."""
    from transformers import AutoModelForCausalLM

    from selfplay.policy import VLLMPolicy

    prompts = [list(range(300, 337)), list(range(500, 553))]  # 37 and 53 tokens: 2 and 3 blocks of 16, then 5
    policy = VLLMPolicy(tiny_model, lora_rank=None, answer_tokens=12)
    try:
        assert policy.engine_args["block_size"] == 16
        groups = policy.generate(prompts, n=4, max_tokens=12, temperature=1.0, seed=11)
        again = policy.generate(prompts, n=4, max_tokens=12, temperature=1.0, seed=11)  # every block cached now
    finally:
        policy.close()
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    for prompt, group, repeat in zip(prompts, groups, again):
        assert [c.completion_ids for c in group] == [c.completion_ids for c in repeat]
        assert len({tuple(c.completion_ids) for c in group}) > 1  # sampled, not one answer four times
        for completion in group:
            ids = completion.completion_ids
            with torch.no_grad():
                logits = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1]
            expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids)[:, None])[:, 0]
            assert (torch.tensor(completion.logprobs) - expected).abs().max() < 2e-3
