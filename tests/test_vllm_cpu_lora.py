"""The CPU LoRA plugin computes exactly what vLLM's own torch ops compute, for one adapter or a mix per batch."""

import importlib.util

import pytest
import torch
import vllm.lora.ops.torch_ops.lora_ops

from selfplay import vllm_cpu_lora


def load_vllm_ops():
    """A fresh copy of vLLM's own ops: in a process where vLLM already loaded the plugin, the module is patched."""
    spec = importlib.util.spec_from_file_location("vllm_lora_ops_original", vllm.lora.ops.torch_ops.lora_ops.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lora_ops = load_vllm_ops()


@pytest.mark.parametrize("indices", [[0] * 7, [0, 1, 1, 0, 2, -1, 2]])
@pytest.mark.parametrize("op", ["bgmv_shrink", "bgmv_expand", "bgmv_expand_slice"])
def test_grouped_ops_match_vllm(op, indices):
    torch.manual_seed(0)
    tokens, rank, width = len(indices), 4, 12
    index = torch.tensor(indices)
    if op == "bgmv_shrink":
        inputs, weights, out_width, extra = torch.randn(tokens, width), torch.randn(3, 1, rank, width), rank, ()
    else:
        inputs, weights, out_width = torch.randn(tokens, rank), torch.randn(3, 1, width, rank), width + 4
        extra = (2, width) if op == "bgmv_expand_slice" else ()
    expected = torch.randn(tokens, out_width)
    got = expected.clone()
    getattr(lora_ops, op)(inputs, weights, expected, index, *extra)
    getattr(vllm_cpu_lora, op)(inputs, weights, got, index, *extra)
    torch.testing.assert_close(got, expected)


def fresh_punica_cpu():
    """vLLM's CPU wrapper class as vLLM defines it (the plugin patches the imported one where vLLM loaded it)."""
    import vllm.lora.punica_wrapper.punica_cpu as punica_cpu

    spec = importlib.util.spec_from_file_location("vllm.lora.punica_wrapper.punica_cpu_original", punica_cpu.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PunicaWrapperCPU


@pytest.mark.parametrize("prefill", [True, False])
@pytest.mark.parametrize("slots", [[1] * 6, [-1] * 6, [1, 1, 2, 2, -1, 1]])
def test_one_adapter_per_forward_pass_adds_what_vllms_path_adds(prefill, slots):
    """A fused q/k/v layer (3 slices) through a wrapper whose tokens use one slot, none, or a mix: the plugin's path
    equals vLLM's own, and a pass with no adapter adds nothing."""
    from vllm.lora.layers.utils import LoRAMapping

    torch.manual_seed(0)
    wrapper_class = fresh_punica_cpu()
    wrapper = wrapper_class(max_num_batched_tokens=32, max_batches=8, device="cpu")
    mapping = LoRAMapping(index_mapping=tuple(s + 1 if s >= 0 else 0 for s in slots),  # adapter ids; 0: none
                          prompt_mapping=(1, 1), is_prefill=prefill)
    wrapper.update_metadata(mapping, [1, 2, 3], 3, 100)  # slot i holds adapter id i + 1
    wrapper.single_adapter = vllm_cpu_lora.single_adapter(wrapper.token_lora_indices)
    assert wrapper.single_adapter == (slots[0] if len(set(slots)) == 1 else None)
    tokens, rank, width, sizes = len(slots), 4, 12, (8, 4, 4)
    x = torch.randn(tokens, width)
    lora_a = tuple(torch.randn(3, 1, rank, width) for _ in sizes)
    lora_b = tuple(torch.randn(3, 1, size, rank) for size in sizes)
    expected = torch.randn(tokens, sum(sizes))
    got = expected.clone()
    wrapper_class.add_lora_linear(wrapper, expected, x, lora_a, lora_b, 0.5, sizes)
    vllm_cpu_lora.add_lora_linear(wrapper, wrapper_class.add_lora_linear, got, x, lora_a, lora_b, 0.5, sizes)
    if slots == [-1] * 6:
        before = got.clone()
        vllm_cpu_lora.add_lora_linear(wrapper, wrapper_class.add_lora_linear, got, x, lora_a, lora_b, 0.5, sizes)
        assert torch.equal(got, before)
        if not prefill:
            return  # vLLM's decode ops read the last slot for index -1: not a value to match
    torch.testing.assert_close(got, expected)
