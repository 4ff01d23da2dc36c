"""A vLLM plugin that lets vLLM's CPU attention keep its KV cache in blocks of 16 tokens instead of 32.

vLLM's prefix cache holds whole blocks, and vLLM runs a request's `n` samples as `n` requests: each of a GRPO group's
samples after the first recomputes its prompt's last, partial block. With blocks of 32 that is ~15 tokens a sample,
as many tokens again as the prompt for a chess group of 8; with 16, half of it. vLLM 0.32's CPU backend asks for
multiples of 32 (`get_supported_kernel_block_sizes`), but its kernels take multiples of 16 (`cpu_attn.cpp` checks
`block_size % BlockSizeAlignment`, 16 for the `vec16` kernels it picks for such blocks); 8 fails that check.
tests/test_vllm_cpu_blocks.py checks that samples through 16-token blocks keep the trainer's logprobs.

vLLM loads `vllm.general_plugins` entry points in every process it starts, as for `selfplay.vllm_cpu_lora`; the
policy calls `cpu_block_size()`, which registers it in its own process and says which size to ask for.
"""

import logging

log = logging.getLogger(__name__)
BLOCK_SIZE = 16
VLLM_BLOCK_SIZE = 32  # what vLLM's CPU backend takes without the plugin
PLUGIN_NAME = "selfplay_cpu_blocks"  # its entry point in pyproject.toml


def register() -> bool:
    """vLLM plugin entry point: CPU attention offers multiples of 16. False where vLLM's backend is not the one this
    was written for (the caller then asks for vLLM's own 32)."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return False
    try:
        from vllm.v1.attention.backend import MultipleOf
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend
    except ImportError as error:
        log.warning("vLLM's CPU attention keeps its own block sizes: %s", error)
        return False
    if getattr(CPUAttentionBackend, "blocks_of_16", False):  # registered already in this process
        return True
    sizes = CPUAttentionBackend.get_supported_kernel_block_sizes()
    if [getattr(size, "base", size) for size in sizes] != [VLLM_BLOCK_SIZE]:
        log.warning("vLLM's CPU attention offers %s blocks, not multiples of 32: left as it is", sizes)
        return False
    CPUAttentionBackend.get_supported_kernel_block_sizes = staticmethod(
        lambda kv_cache_spec=None: [MultipleOf(BLOCK_SIZE)])
    CPUAttentionBackend.blocks_of_16 = True
    return True


def cpu_block_size() -> int:
    """The KV cache block to ask vLLM for on CPU: 16 with this plugin in place, else vLLM's 32 (also where
    `VLLM_PLUGINS` leaves it out: vLLM's processes will not load it)."""
    from vllm import envs

    allowed = envs.VLLM_PLUGINS
    if allowed is not None and PLUGIN_NAME not in allowed:
        return VLLM_BLOCK_SIZE
    return BLOCK_SIZE if register() else VLLM_BLOCK_SIZE
