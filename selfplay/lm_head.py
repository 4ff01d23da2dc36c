"""The logprobs (and entropies) of target tokens through a frozen LM head in one pass over the vocabulary, on CPU.

TRL's fused LM head (`trl.kernels.ChunkedLogProbFunction`) folds the logits into running statistics tile by tile: a
Triton kernel on GPUs, and on CPU ~20 torch ops over each (tokens x 32768) float32 tile, forward and backward, plus a
float32 cast of the head's weight per tile and call. For GRPO's ~128 answer tokens a micro-batch that is ~0.1 s, as
much as the decoder's attention. `TargetLogProbs` computes the same values with the whole vocabulary at once (the
logits of 128 tokens are 25 MB): the logits under autocast in bfloat16 from a bfloat16 copy of the head kept across
calls (TRL's tile is bfloat16 too), the rest in float32; the backward recomputes the logits, as TRL's does.
The head's gradient with respect to the hidden states comes from one bfloat16 product, as autocast's own linear
layers give theirs. Where it does not apply (a trained or biased head, softcapping, other outputs) TRL's runs.
"""

import torch
from trl.kernels.chunked_logprob import ChunkedLogProbFunction


class TargetLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, scale: float, with_entropy: bool):
        head = cast(weight, compute_dtype(hidden))
        with torch.autocast("cpu", enabled=False):  # float32 from the logits on, whatever the caller's autocast
            logits = (hidden.to(head.dtype) @ head.t()).float().mul_(scale)
            log_z = torch.logsumexp(logits, dim=-1)
            logps = logits.gather(1, targets[:, None]).squeeze(1) - log_z
            entropy = None
            if with_entropy:
                log_p = logits.sub_(log_z[:, None])
                entropy = -torch.bmm(log_p.exp()[:, None], log_p[:, :, None]).view(-1)
        ctx.save_for_backward(hidden, weight, targets, log_z, log_z if entropy is None else entropy)
        ctx.scale, ctx.dtype = scale, head.dtype
        ctx.set_materialize_grads(False)
        return logps, entropy

    @staticmethod
    def backward(ctx, grad_logps, grad_entropy):
        hidden, weight, targets, log_z, entropy = ctx.saved_tensors
        head = cast(weight, ctx.dtype)
        with torch.autocast("cpu", enabled=False):
            log_p = (hidden.to(head.dtype) @ head.t()).float().mul_(ctx.scale).sub_(log_z[:, None])
            p = log_p.exp()
            if grad_logps is None:
                grad = torch.zeros_like(p)
            else:  # d log p_target / dz_j = 1[j = target] - p_j
                grad = (p * -grad_logps[:, None]).scatter_add_(1, targets[:, None], grad_logps[:, None].float())
            if grad_entropy is not None:  # d entropy / dz_j = -p_j (log p_j + entropy)
                grad.sub_(p.mul_(log_p.add_(entropy[:, None])).mul_(grad_entropy[:, None]))
            grad_hidden = (grad.mul_(ctx.scale).to(head.dtype) @ head).to(hidden.dtype)
        return grad_hidden, None, None, None, None


class FusedLMHead:
    """Stands in for TRL's `ChunkedLogProbFunction` (`apply`, same arguments and outputs)."""

    @staticmethod
    def apply(hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None, logit_scale=1.0,
              outputs=("log_probs",)):
        if (weight.requires_grad or bias is not None or final_logit_softcapping is not None
                or not set(outputs) <= {"log_probs", "entropy"} or hidden.device.type != "cpu"):
            return ChunkedLogProbFunction.apply(hidden, weight, bias, targets, temperature, chunk_size,
                                                final_logit_softcapping, logit_scale, outputs)
        logps, entropy = TargetLogProbs.apply(hidden, weight, targets, logit_scale / temperature,
                                              "entropy" in outputs)
        return logps, entropy, None, None, None


def compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else hidden.dtype


def cast(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`weight.to(dtype)`, kept on the weight while it is unchanged: a frozen head is cast once, not at every call."""
    if weight.dtype == dtype:
        return weight
    key = (weight.data_ptr(), weight._version, dtype)
    kept = getattr(weight, "_selfplay_cast", None)
    if kept is None or kept[0] != key:
        kept = weight._selfplay_cast = (key, weight.detach().to(dtype))
    return kept[1]
