"""GRPO logprobs that run each group's shared prompt through the model once instead of once per sample.

The samples of a GRPO group share their prompt: a chess prompt is ~300 tokens and an answer ~8, so TRL's update,
which runs every (prompt + completion) row on its own, spends >95% of its work re-encoding the same prompt 8 times.
`shared_prefix_logps` computes the same per-token logprobs (TRL keeps the loss, advantages, optimizer and everything
else; `selfplay.trl_seam` plugs it into TRL's trainer), in one of two ways:

- short answers (chess: 8 rows of ~9 tokens after a ~200-token prompt), packed: one sequence per group, its prompt
  then every row's tail (the last prompt token and the completion), with an attention mask that lets each tail see
  the prompt and itself only and positions that restart after the prompt for each tail: one pass, nothing copied;
- long answers (code: up to 256 tokens a row, where a packed group's attention would grow with the square of all
  its rows), cached: the prompt minus its last token goes through the model once per group, keeping its key/value
  cache (with gradients); the cache is repeated for the group's rows, and each row's tail goes through on top of it.

The packed way's attention on CPU is `packed_attention`: the mask is a block pattern, not a causal one, and torch's CPU
SDPA kernel for masks (its flash kernel) took a quarter of the update's backward on these sequences (~200 columns);
plain matmuls and a softmax cost a third of that here, at the same precision (bench/update_parts.py: 1.15x a
micro-step). They keep the float32 probabilities for the backward (~0.1 GB a micro-step); a backward that recomputed
them from each row's log-sum, as SDPA's kernel does, lost the gain.

Either way TRL's own fused LM head scores the completion tokens at TRL's temperature, and the LoRA weights in the
prompt's layers are trained as before. Rotary positions are relative, so this is the same computation as TRL's (the
test checks logprobs and gradients, both ways). For micro-batches to hold whole groups, the generation batch keeps
TRL's group order instead of being shuffled; that is done only where it changes nothing: one optimizer step per
generation batch (`steps_per_generation` equal to `gradient_accumulation_steps`, `num_iterations=1`), where every
micro-batch's gradient is summed before the step. Rows whose prompt no neighbour shares, multimodal inputs, and
multi-process training fall back to TRL's path.
"""

import contextlib

import torch
from transformers import AttentionInterface

# On CPU a packed micro-batch's length is rounded up to a multiple of this, with columns no row attends: oneDNN
# builds (and keeps) kernels for each new matmul shape, and the trainer's heap grew with every new length (~0.5 GB in
# 30 default updates, each new page a fault) where rounded lengths reuse both.
PACKED_LENGTH_STEP = 16


def prompt_groups(input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int) -> list[tuple[int, int]]:
    """[start, end) row ranges of consecutive rows with the same prompt ids and mask."""
    groups, start = [], 0
    for row in range(1, input_ids.size(0) + 1):
        if row == input_ids.size(0) or not (
            torch.equal(input_ids[row, :prompt_len], input_ids[start, :prompt_len])
            and torch.equal(attention_mask[row, :prompt_len], attention_mask[start, :prompt_len])
        ):
            groups.append((start, row))
            start = row
    return groups


def shared_prefix_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
                        groups: list[tuple[int, int]], compute_entropy: bool):
    """(logprobs, entropies or None) of the last `logits_to_keep` tokens of each row, each group's prompt (the
    columns before them) encoded once; as TRL's `_get_per_token_logps_and_entropies`. `groups` cover the rows in
    order; the micro-batch's groups go through the model together (larger matmuls run nearer the CPU's peak than one
    pass per group). Packed where a group's tails are no longer than its prompt, else cached. TRL left-pads every
    prompt to the longest of the generation batch: columns that no row of these groups attends are dropped first, but
    for those a packed length on CPU rounds up to (PACKED_LENGTH_STEP; left padding is added where too few)."""
    first = int(attention_mask[:, : input_ids.size(1) - logits_to_keep].any(0).int().argmax())  # first attended column
    prompt = input_ids.size(1) - first - logits_to_keep - 1  # the packed sequence's prompt part
    tails = max(end - start for start, end in groups) * (logits_to_keep + 1)
    if tails > prompt:
        return cached_logps(model, input_ids[:, first:], attention_mask[:, first:], logits_to_keep, groups,
                            compute_entropy)
    if input_ids.device.type == "cpu":
        first -= -(prompt + tails) % PACKED_LENGTH_STEP
    if first < 0:
        input_ids = torch.nn.functional.pad(input_ids, (-first, 0))
        attention_mask, first = torch.nn.functional.pad(attention_mask, (-first, 0)), 0
    return packed_logps(model, input_ids[:, first:], attention_mask[:, first:], logits_to_keep, groups,
                        compute_entropy)


def packed_logps(model, input_ids, attention_mask, logits_to_keep, groups, compute_entropy):
    """One sequence per group: its prompt minus the last token (P columns), then a slot of T = 1 + C columns for each
    row (the last prompt token, then the completion); a group with fewer rows leaves its last slots empty."""
    prompt = input_ids.size(1) - logits_to_keep - 1
    tail = logits_to_keep + 1
    slots = max(end - start for start, end in groups)
    length, device = prompt + slots * tail, input_ids.device
    ids = input_ids.new_zeros(len(groups), length)
    seen = torch.zeros(len(groups), length, dtype=torch.bool, device=device)  # keys a query may attend: not padding
    labels = torch.full_like(ids, -100)
    for g, (start, end) in enumerate(groups):
        filled = prompt + (end - start) * tail
        ids[g, :prompt], ids[g, prompt:filled] = input_ids[start, :prompt], input_ids[start:end, prompt:].flatten()
        seen[g, :prompt] = attention_mask[start, :prompt].bool()
        seen[g, prompt:filled] = attention_mask[start:end, prompt:].bool().flatten()
        scored = input_ids[start:end, prompt:].masked_fill(attention_mask[start:end, prompt:] == 0, -100)
        scored[:, 0] = -100  # the last prompt token: the logits that score a slot's first completion token
        labels[g, prompt:filled] = scored.flatten()
    segment = torch.cat([torch.zeros(prompt, dtype=torch.long), torch.arange(1, slots + 1).repeat_interleave(tail)])
    segment, column = segment.to(device), torch.arange(length, device=device)
    # causal, and a slot sees the prompt and itself only; every query sees itself (a row of padding attends nothing)
    allowed = (column[None, :] <= column[:, None]) & ((segment[None, :] == 0) | (segment[None, :] == segment[:, None]))
    mask = (allowed & seen[:, None, :]) | torch.eye(length, dtype=torch.bool, device=device)
    if device.type == "cpu":  # packed_attention adds it to the scores
        mask = torch.zeros(mask.shape).masked_fill_(~mask, float("-inf"))
    positions = torch.cat([torch.arange(prompt), prompt + torch.arange(tail).repeat(slots)]).to(device)
    with attention(model, "selfplay_packed") if device.type == "cpu" else contextlib.nullcontext():  # GPUs: SDPA
        outputs = model(input_ids=ids, attention_mask=mask[:, None], position_ids=positions.expand(len(groups), -1),
                        labels=labels, fused_lm_head=True)
    # log_probs[:, i] scores column i + 1: a row's completion token c sits in column prompt + slot * T + 1 + c
    owner = torch.tensor([g for g, (start, end) in enumerate(groups) for _ in range(end - start)], device=device)
    slot = torch.tensor([s for start, end in groups for s in range(end - start)], device=device)
    columns = prompt + slot[:, None] * tail + torch.arange(logits_to_keep, device=device)
    logps = outputs.log_probs[owner[:, None], columns]
    return logps, outputs.entropy[owner[:, None], columns] if compute_entropy else None


def cached_logps(model, input_ids, attention_mask, logits_to_keep, groups, compute_entropy):
    """The prompts minus their last token through the model once (one row per group), their key/value cache repeated
    for the rows, every row's tail on top of it."""
    prompt_len = input_ids.size(1) - logits_to_keep
    firsts = [start for start, _ in groups]
    prefix = model(
        input_ids=input_ids[firsts, : prompt_len - 1],
        attention_mask=attention_mask[firsts, : prompt_len - 1],
        use_cache=True,
        logits_to_keep=1,
    )
    cache = prefix.past_key_values
    owner = torch.tensor([g for g, (start, end) in enumerate(groups) for _ in range(end - start)],
                         device=input_ids.device)
    cache.batch_select_indices(owner)  # (groups, heads, P-1, d) -> (rows, heads, P-1, d), differentiable
    tail = input_ids[:, prompt_len - 1 :]  # (rows, 1 + C): last prompt token, then the completion
    labels = tail.masked_fill(attention_mask[:, prompt_len - 1 :] == 0, -100)
    outputs = model(
        input_ids=tail, attention_mask=attention_mask, past_key_values=cache, labels=labels, fused_lm_head=True,
    )
    logps = outputs.log_probs[:, -logits_to_keep:]  # (rows, C)
    return logps, outputs.entropy[:, -logits_to_keep:] if compute_entropy else None


def packed_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Attention under a float32 (batch, 1, L, L) mask of 0 and -inf (added to the scores), as transformers calls its
    attention functions: the scores as two matmuls and a softmax in float32 (under autocast the matmuls take
    bfloat16, as SDPA's inputs are cast). A key/value head's query heads go through it together (grouped-query
    attention without repeating the keys)."""
    batch, heads, length, dim = query.shape
    kv_heads = key.size(1)
    grouped = query.reshape(batch, kv_heads, heads // kv_heads * length, dim)
    scores = torch.matmul(grouped, key.transpose(2, 3)).view(batch, kv_heads, heads // kv_heads, length, -1)
    scores = torch.add(attention_mask[:, :, None], scores, alpha=scaling)  # in float32, one pass
    probs = torch.nn.functional.dropout(torch.softmax(scores, dim=-1), p=dropout, training=module.training)
    out = torch.matmul(probs.to(value.dtype).view(batch, kv_heads, heads // kv_heads * length, -1), value)
    return out.view(batch, heads, length, dim).transpose(1, 2), None


AttentionInterface.register("selfplay_packed", packed_attention)


@contextlib.contextmanager
def attention(model, implementation: str):
    """`model`'s attention layers call `implementation` (a name registered with transformers) inside the block."""
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = implementation
    try:
        yield
    finally:
        config._attn_implementation = before
