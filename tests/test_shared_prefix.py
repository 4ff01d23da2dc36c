"""Shared-prefix logprobs equal TRL's own, value and gradient, on a tiny random Llama with a LoRA adapter (on CUDA
where there is a GPU: bench/gpu_check.sh)."""

import pytest
import torch
from trl import GRPOTrainer

from selfplay import shared_prefix
from selfplay.config import make_config
from selfplay.shared_prefix import prompt_groups


@pytest.fixture(scope="module")
def trainer(tiny_model, dense_chess_domain, tmp_path_factory):
    from datasets import Dataset

    from selfplay.train import build_trainer

    config = make_config(model=tiny_model, steps=1, prompts_per_step=2, num_generations=4, micro_batch_size=8,
                        train_positions=2, grpo=["bf16=false"])  # float32: compare to 1e-5
    rewards = dense_chess_domain.rewards(config)
    rewards.close()
    funcs, weights = rewards.funcs, rewards.weights
    dataset = Dataset.from_list(dense_chess_domain.train_rows(config, []))
    trainer = build_trainer(config, tiny_model, dataset, funcs, weights, None, tmp_path_factory.mktemp("run"), {}, [])
    with torch.no_grad():  # PEFT starts lora_B at zero: make the adapter matter
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return trainer


def batch(prompt_len: int = 12):
    """Two groups of 3 rows: left-padded prompts of different lengths, right-padded completions of 4 tokens."""
    torch.manual_seed(0)
    prompts = [torch.randint(10, 1000, (prompt_len,)), torch.randint(10, 1000, (prompt_len - 3,))]
    ids, mask = [], []
    for prompt in prompts:
        for length in (4, 2, 3):
            completion = torch.randint(10, 1000, (4,))
            pad = prompt_len - len(prompt)
            ids.append(torch.cat([torch.zeros(pad, dtype=torch.long), prompt, completion]))
            mask.append(torch.cat([torch.zeros(pad), torch.ones(len(prompt)), (torch.arange(4) < length).float()]))
    return torch.stack(ids), torch.stack(mask).long()


def logps_and_grads(trainer, compute, prompt_len, left_pad: int = 0):
    """`compute`'s logprobs, entropies and LoRA gradients for `batch(prompt_len)`, every row first padded by
    `left_pad` more columns (as TRL pads a micro-batch to the longest prompt of the whole generation batch)."""
    input_ids, attention_mask = (torch.nn.functional.pad(t, (left_pad, 0)).to(trainer.accelerator.device)
                                 for t in batch(prompt_len))  # CUDA where it is
    trainer.model.zero_grad()
    logps, entropies, _ = compute(trainer.model, input_ids, attention_mask, 4, compute_entropy=True)
    completion_mask = attention_mask[:, -4:].bool()
    logps[completion_mask].sum().backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    return logps.detach()[completion_mask], entropies.detach()[completion_mask], grads


def test_rows_are_grouped_by_identical_prompt():
    input_ids, attention_mask = batch()
    assert prompt_groups(input_ids, attention_mask, 12) == [(0, 3), (3, 6)]


def spy_on(monkeypatch, way: str) -> list:
    """Record each call of shared_prefix's `way` ("packed" or "cached")."""
    calls, compute = [], getattr(shared_prefix, f"{way}_logps")
    monkeypatch.setattr(shared_prefix, f"{way}_logps", lambda *a: calls.append(1) or compute(*a))
    return calls


# a group's 3 tails of 1 + 4 tokens: packed after a prompt of 15 or more (minus its last token), else cached
@pytest.mark.parametrize("way, prompt_len", [("packed", 24), ("cached", 12)])
def test_shared_prefix_logprobs_and_gradients_match_trl(trainer, monkeypatch, way, prompt_len):
    calls = spy_on(monkeypatch, way)
    shared = logps_and_grads(trainer, trainer._get_per_token_logps_and_entropies, prompt_len)
    assert calls, f"the {way} way was not taken"
    trl_way = lambda *a, **k: GRPOTrainer._get_per_token_logps_and_entropies(trainer, *a, **k)  # noqa: E731
    reference = logps_and_grads(trainer, trl_way, prompt_len)
    assert torch.allclose(shared[0], reference[0], atol=1e-5)
    assert torch.allclose(shared[1], reference[1], atol=1e-4)
    assert shared[2].keys() == reference[2].keys()
    for name, grad in reference[2].items():
        assert torch.allclose(shared[2][name], grad, atol=1e-5, rtol=1e-4), name
    assert any(grad.abs().max() > 0 for name, grad in reference[2].items() if "lora_A" in name)


@pytest.mark.parametrize("way, prompt_len, left_pad", [("packed", 24, 7), ("packed", 24, 30), ("cached", 12, 7)])
def test_columns_that_no_row_attends_are_dropped_and_the_results_stay_trls(trainer, monkeypatch, way, prompt_len,
                                                                           left_pad):
    widths, compute = [], getattr(shared_prefix, f"{way}_logps")
    monkeypatch.setattr(shared_prefix, f"{way}_logps", lambda model, ids, *a: widths.append(ids.size(1)) or compute(
        model, ids, *a))
    shared = logps_and_grads(trainer, trainer._get_per_token_logps_and_entropies, prompt_len, left_pad=left_pad)
    attended = prompt_len + 4
    if way == "packed" and trainer.accelerator.device.type == "cpu":  # the packed length rounded up: with 7 columns
        packed = attended - 4 - 1 + 3 * 5  # of padding, all kept and 3 added; with 30, 10 kept (prompt, 3 tails of 5)
        assert widths == [attended + -packed % shared_prefix.PACKED_LENGTH_STEP]
    else:
        assert widths == [attended], f"the {left_pad} columns of padding that every row has went through the model"
    trl_way = lambda *a, **k: GRPOTrainer._get_per_token_logps_and_entropies(trainer, *a, **k)  # noqa: E731
    reference = logps_and_grads(trainer, trl_way, prompt_len, left_pad=left_pad)
    assert torch.allclose(shared[0], reference[0], atol=1e-5)
    for name, grad in reference[2].items():
        assert torch.allclose(shared[2][name], grad, atol=1e-5, rtol=1e-4), name


@pytest.mark.parametrize("way, completion", [("packed", 8), ("cached", 30)])
def test_backward_passes_of_one_batch_are_bit_identical(trainer, monkeypatch, way, completion):
    """The backward of the group's repeated prompt cache (index_select), of the packed way's gathers and of TRL's fused
    LM head (a boolean mask) add with index_add_/index_put_(accumulate=True), which torch runs on CPU as parallel atomic
    adds: without selfplay.train.sum_gradients_in_order (build_trainer calls it) each pass sums in another order, and a
    resumed run's adapter drifts from the uninterrupted one's (tests/test_resume.py)."""
    calls = spy_on(monkeypatch, way)
    torch.manual_seed(1)
    rows, prompt = 8, 200  # a chess group: the cache's gradient (8 x 200 x 64) spans both threads
    input_ids = torch.cat([torch.randint(10, 1000, (1, prompt)).expand(rows, prompt),
                           torch.randint(10, 1000, (rows, completion))], dim=1).to(trainer.accelerator.device)
    attention_mask = torch.ones_like(input_ids)
    passes = []
    for _ in range(4):
        trainer.model.zero_grad()
        logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, input_ids, attention_mask, completion)
        logps.sum().backward()
        passes.append({n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad})
    assert calls, f"the {way} way was not taken"
    for other in passes[1:]:
        for name, grad in passes[0].items():
            assert torch.equal(other[name], grad), name


def test_frozen_weights_stored_in_bfloat16_give_autocasts_results_to_the_bit(tiny_model, dense_chess_domain,
                                                                            tmp_path):
    """Under bfloat16 autocast build_trainer stores the LoRA layers' frozen base weights in bfloat16
    (selfplay.train.frozen_linears_in_bfloat16): the logprobs and the adapter's gradients equal, bit for bit, those
    of the same model with its float32 weights cast by autocast at each op and its inputs cast to the adapter's
    float32 by PEFT (turned off there); the embedding and norms stay float32,
    out of the checkpoint file's mapping."""
    import copy

    from datasets import Dataset
    from peft.tuners.lora import LoraLayer
    from safetensors.torch import load_file

    from selfplay.train import build_trainer

    config = make_config(model=tiny_model, steps=1, prompts_per_step=2, num_generations=4, micro_batch_size=8,
                         train_positions=2, grpo=["bf16=true"])
    rewards = dense_chess_domain.rewards(config)
    rewards.close()
    dataset = Dataset.from_list(dense_chess_domain.train_rows(config, []))
    stored = build_trainer(config, tiny_model, dataset, rewards.funcs, rewards.weights, None, tmp_path, {}, [])
    with torch.no_grad():
        for name, p in stored.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    cast = copy.deepcopy(stored.model)
    original = load_file(f"{tiny_model}/model.safetensors")
    layers = {name: m for name, m in cast.named_modules() if isinstance(m, LoraLayer)}
    assert layers
    for name, layer in layers.items():
        layer.base_layer.weight.data = original[name.removeprefix("base_model.model.") + ".weight"].clone()
        layer.cast_input_dtype_enabled = True  # PEFT's own cast of the input to the adapter's float32
    assert not any(m.cast_input_dtype_enabled for m in stored.model.modules() if isinstance(m, LoraLayer))
    dtypes = {n: p.dtype for n, p in stored.model.named_parameters()}
    assert {dtypes[n] for n in dtypes if "base_layer" in n} == {torch.bfloat16}
    assert {dtypes[n] for n in dtypes if "base_layer" not in n} == {torch.float32}  # LoRA, embedding, norms
    assert sum(p.nbytes for p in stored.model.parameters()) < sum(p.nbytes for p in cast.parameters())
    mapped = [[int(a, 16) for a in line.split()[0].split("-")] for line in open("/proc/self/maps")
              if line.rstrip().endswith("model.safetensors") and tiny_model in line]
    in_checkpoint_file = [n for n, p in stored.model.named_parameters()
                          if any(lo <= p.untyped_storage().data_ptr() < hi for lo, hi in mapped)]
    assert not in_checkpoint_file  # none left in the file's mapping: its pages are not held

    results = []
    for model in (stored.model, cast):
        compute = lambda _model, *a, **k: stored._get_per_token_logps_and_entropies(model, *a, **k)  # noqa: E731
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results.append(logps_and_grads(type("T", (), {"model": model, "accelerator": stored.accelerator}),
                                           compute, 24))
    (logps, entropies, grads), (cast_logps, cast_entropies, cast_grads) = results
    assert torch.equal(logps, cast_logps) and torch.equal(entropies, cast_entropies)
    assert grads.keys() == cast_grads.keys() and grads
    for name, grad in grads.items():
        assert torch.equal(grad, cast_grads[name]), name
