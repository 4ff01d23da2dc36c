"""The precision the fine-tunes (the warm start's and GRPO's) run in here: bfloat16 autocast or float32, by timing both.

    bf16 = update_in_bfloat16(model_path)  # True on CUDA; on CPU timed once per machine and model shape, then cached

TRL's default is bfloat16 autocast wherever the hardware has bfloat16. On a CPU with AVX512-BF16 or AMX, bfloat16
matmuls run at several times float32's peak, but a LoRA update of a small model is not matmul-bound, and autocast
casts the frozen base weights again at every op (it caches only the casts of weights that train). Measured with
`bench/step_profile.py`: on a 2-core Xeon with AMX the default step took 8.3 s in bfloat16 and 7.2 s in float32; on
an AMD Zen 4 bfloat16 was ~1.5x faster. So the choice is timed: forward and backward passes of a few layers of the
model's own shapes under LoRA, as a GRPO group's (one prompt, eight answers), alternately in both precisions;
bfloat16 is kept where it is faster. The answer is cached in ~/.cache/selfplay/precision.json per CPU, torch version
and model shape (the timing takes a few seconds).
"""

import json
import logging
import time
from pathlib import Path

from selfplay.model import cache_dir
from selfplay.terminal import cpu_name

log = logging.getLogger(__name__)

PROBE_LAYERS = 4
PROBE_ROUNDS = 3


def update_in_bfloat16(model_path: str, *, cache: Path | None = None) -> bool:
    """Whether the update should run under bfloat16 autocast: on CUDA, yes (TRL's default); on a CPU without
    bfloat16, no; else whichever of the two a timed probe finds faster, cached per machine and model shape."""
    import torch
    from transformers import AutoConfig

    if torch.cuda.is_available():
        return True
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    config = AutoConfig.from_pretrained(model_path)
    shape = "x".join(str(getattr(config, name, 0)) for name in (
        "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "vocab_size"))
    key = f"{cpu_name()} | torch {torch.__version__} | {config.model_type} {shape} | {torch.get_num_threads()} threads"
    path = cache or cache_dir() / "precision.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if key not in known:
        seconds = time_update(config)
        known[key] = {"bf16_s": seconds[True], "fp32_s": seconds[False]}
        log.info("update precision probe (%s): bfloat16 %.3f s, float32 %.3f s", key, seconds[True], seconds[False])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known, indent=1) + "\n")
    return known[key]["bf16_s"] < known[key]["fp32_s"]


def time_update(config) -> dict[bool, float]:
    """Seconds of a forward and backward pass of the first PROBE_LAYERS layers (random weights, LoRA r=16 on every
    linear layer) over a group-shaped batch, the fastest of PROBE_ROUNDS, under bfloat16 autocast (True) and not."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    small = copy.deepcopy(config)
    small.num_hidden_layers = min(PROBE_LAYERS, config.num_hidden_layers)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(small, dtype=torch.float32)
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
        prompt = torch.randint(0, small.vocab_size, (1, 192))  # a chess prompt's length
        answers = torch.randint(0, small.vocab_size, (8, 16))

    def update(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=prompt, logits_to_keep=1).logits.float().sum()
            loss = loss + model(input_ids=answers, logits_to_keep=16).logits.float().logsumexp(-1).sum()
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    seconds = {True: [], False: []}
    for bf16 in (True, False):
        update(bf16)  # warm-up: first calls allocate and pick kernels
    for _ in range(PROBE_ROUNDS):
        for bf16 in (True, False):
            seconds[bf16].append(update(bf16))
    return {bf16: min(times) for bf16, times in seconds.items()}
