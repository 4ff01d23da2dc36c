"""A vLLM plugin that makes LoRA serving on CPU fast: one matmul per adapter instead of one weight copy per token.

vLLM's CPU LoRA ops compute `einsum("bi,boi->bo", x, W[index_of_each_token])`, which copies the adapter's weight
matrix once per token: for a 300-token prompt that is gigabytes of copies per forward pass, and generation with an
adapter ran ~4x slower than without (10 s -> 45 s for 4 prompts x 8 samples on 2 cores). Here the tokens are grouped
by adapter index and each group is one matmul: the same result (same adapter per token, same arithmetic), without
the copies.

When every token of a forward pass uses one adapter (a loop's policy always does), each LoRA linear layer skips
the per-token indices altogether: one matmul for A and one for B per slice, on views of the adapter's slot, found
once per forward pass instead of once per op (each op's `torch.unique` and weight gather cost more than its
matmuls: with them the adapter's layers took ~20% of a default generation).

vLLM loads `vllm.general_plugins` entry points in every process it starts (the engine's workers included), which
is why this is a plugin (registered in pyproject.toml) rather than a patch applied by the loop's own process.
"""

import torch


def _lora_matmul(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, dtype) -> torch.Tensor:
    """`einsum("bi,boi->bo", inputs, weights[indices])` for stacked weights (L, [1,] O, I), grouped by index."""
    stacked = weights.squeeze(1) if weights.dim() == 4 else weights  # (L, O, I)
    inputs = inputs.to(dtype)
    groups = torch.unique(indices)
    if groups.numel() == 1:
        return inputs @ stacked[groups[0]].to(dtype).t()
    out = inputs.new_empty(inputs.shape[0], stacked.shape[1])
    for index in groups:
        rows = indices == index
        out[rows] = inputs[rows] @ stacked[index].to(dtype).t()
    return out


def bgmv_shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling=1.0):
    outputs = _lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs=True):
    outputs = _lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = 1 if outputs.shape[0] == 1 and output_tensor.shape[0] != 1 else output_tensor.shape[0]
    common_len = min(outputs.shape[1], output_tensor.shape[1])  # adapter and model may pad differently
    if add_inputs:
        output_tensor[:, :common_len] += outputs[:limit, :common_len]
    else:
        output_tensor[:, :common_len] = outputs[:limit, :common_len]


def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset, slice_size, add_inputs=True):
    outputs = _lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs


def single_adapter(indices: torch.Tensor) -> int | None:
    """The adapter slot every token uses (-1: none), or None where tokens use different ones."""
    if indices.numel() == 0:
        return None
    first, last = int(indices.min()), int(indices.max())
    return first if first == last else None


def add_lora_linear(wrapper, grouped, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, **kwargs):
    """`y[:, slice] += scale * x @ A.T @ B.T` for each slice, from one adapter slot's views; `grouped` (vLLM's own
    path through the grouped ops) where the forward pass mixes adapters."""
    slot = getattr(wrapper, "single_adapter", None)
    if slot is None:
        return grouped(wrapper, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, **kwargs)
    if slot < 0:  # no adapter: nothing to add (vLLM's CPU decode ops would read the last slot for index -1)
        return
    rows, offset = y.view(-1, y.shape[-1]), 0
    x = x.view(-1, x.shape[-1]).to(y.dtype)
    for a, b, size in zip(lora_a_stacked, lora_b_stacked, output_slices):
        a, b = a[slot].reshape(a.shape[-2:]), b[slot].reshape(b.shape[-2:])  # (r, in), (out, r)
        shrunk = (x @ a.to(y.dtype).t()).mul_(scale)
        width = min(size, b.shape[0])  # adapter and model may pad differently
        rows[:, offset : offset + width] += shrunk @ b[:width].to(y.dtype).t()
        offset += size


def register() -> None:
    """vLLM plugin entry point: swap in the grouped ops where vLLM's CPU LoRA wrapper looks them up."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    for module in (lora_ops, punica_cpu):  # sgmv_* call the bgmv_* of lora_ops; punica_cpu imported names
        for name, op in (("bgmv_shrink", bgmv_shrink), ("bgmv_expand", bgmv_expand), ("bgmv_expand_slice", bgmv_expand_slice)):
            if hasattr(module, name):
                setattr(module, name, op)
    wrapper = punica_cpu.PunicaWrapperCPU
    if getattr(wrapper, "single_adapter_path", False):  # registered already in this process
        return
    update, grouped = wrapper.update_metadata, wrapper.add_lora_linear

    def update_metadata(self, *args, **kwargs):
        update(self, *args, **kwargs)
        self.single_adapter = single_adapter(self.token_lora_indices)

    wrapper.update_metadata = update_metadata
    wrapper.add_lora_linear = lambda self, *args, **kwargs: add_lora_linear(self, grouped, *args, **kwargs)
    wrapper.single_adapter_path = True
