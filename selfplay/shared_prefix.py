"""GRPO logprobs that run each group's shared prompt through the model once instead of once per sample.

The samples of a GRPO group share their prompt: a chess prompt is ~300 tokens and an answer ~8, so TRL's update,
which runs every (prompt + completion) row on its own, spends >95% of its work re-encoding the same prompt 8 times.
`shared_prefix_logps` computes the same per-token logprobs (TRL keeps the loss, advantages, optimizer and everything
else; `selfplay.trl_seam` plugs it into TRL's trainer):

1. the prompt minus its last token goes through the model once per group, keeping its key/value cache (with
   gradients: the LoRA weights in the prompt's layers are trained as before);
2. the cache is repeated for the group's rows, and the last prompt token plus each completion go through TRL's own
   fused LM head on top of it, which scores the completion tokens at TRL's temperature.

Rotary positions are relative, so this is the same computation as TRL's (the test checks logprobs and gradients).
For micro-batches to hold whole groups, the generation batch keeps TRL's group order instead of being shuffled;
that is done only where it changes nothing: one optimizer step per generation batch (`steps_per_generation` equal
to `gradient_accumulation_steps`, `num_iterations=1`), where every micro-batch's gradient is summed before the step.
Rows whose prompt no neighbour shares, multimodal inputs, and multi-process training fall back to TRL's path.
"""

import torch


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
    order; the micro-batch's groups go through the model together (one pass for their prompts, one for every row's
    tail: larger matmuls run nearer the CPU's peak than one pass per group, 1.25x on the prompts of a chess batch)."""
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
