"""The logprobs (and entropies) of target tokens through a frozen LM head in one pass over the vocabulary, on CPU.

TRL's fused LM head (`trl.kernels.ChunkedLogProbFunction`) folds the logits into running statistics tile by tile: a
Triton kernel on GPUs, and on CPU ~20 torch ops over each (tokens x 32768) float32 tile, forward and backward, plus a
float32 cast of the head's weight per tile and call. For GRPO's ~128 answer tokens a micro-batch that is ~0.1 s, as
much as the decoder's attention. `TargetLogProbs` computes the same values with the whole vocabulary at once (the
logits of 128 tokens are 25 MB): the logits under autocast in bfloat16 from a bfloat16 copy of the head kept across
calls (TRL's tile is bfloat16 too), the rest in float32. The probabilities are kept for the backward, which turns
them into the logits' gradient in place (TRL's recomputes the logits: a third product over the vocabulary, and three
fresh 25 MB buffers a micro-batch, each page a fault).
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
            log_p = logits.sub_(log_z[:, None])
            entropy = None
            if with_entropy:
                p = log_p.exp()
                entropy = -torch.bmm(p[:, None], log_p[:, :, None]).view(-1)
            else:
                p = log_p.exp_()
        ctx.save_for_backward(weight, targets, p, entropy)
        ctx.scale, ctx.dtype, ctx.hidden_dtype = scale, head.dtype, hidden.dtype
        ctx.set_materialize_grads(False)
        return logps, entropy

    @staticmethod
    def backward(ctx, grad_logps, grad_entropy):
        weight, targets, p, entropy = ctx.saved_tensors  # p is the backward's buffer: a second backward raises
        head = cast(weight, ctx.dtype)
        with torch.autocast("cpu", enabled=False):
            entropy_term = None
            if grad_entropy is not None:  # d entropy / dz_j = -p_j (log p_j + entropy)
                entropy_term = torch.xlogy(p, p).add_(p * entropy[:, None]).mul_(grad_entropy[:, None])
            if grad_logps is None:
                grad = p.zero_()
            else:  # d log p_target / dz_j = 1[j = target] - p_j
                grad = p.mul_(-grad_logps[:, None]).scatter_add_(1, targets[:, None], grad_logps[:, None].float())
            if entropy_term is not None:
                grad.sub_(entropy_term)
            grad_hidden = (grad.mul_(ctx.scale).to(head.dtype) @ head).to(ctx.hidden_dtype)
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
