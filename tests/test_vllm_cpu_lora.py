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
