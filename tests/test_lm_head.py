"""selfplay's one-pass LM head gives TRL's fused head's logprobs, entropies and gradients, on CPU."""

import pytest
import torch
from trl.kernels.chunked_logprob import ChunkedLogProbFunction

from selfplay.lm_head import FusedLMHead


def head_outputs(head, hidden, weight, targets, autocast: bool, outputs=("log_probs", "entropy")):
    hidden = hidden.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logps, entropy, *_ = head.apply(hidden, weight, None, targets, 0.7, 32, None, 1.5, outputs)
    loss = (logps * torch.linspace(-1, 1, len(targets))).sum()
    if entropy is not None:
        loss = loss + 0.3 * entropy.sum()
    loss.backward()
    return logps.detach(), None if entropy is None else entropy.detach(), hidden.grad


@pytest.mark.parametrize("outputs", [("log_probs",), ("log_probs", "entropy")])
@pytest.mark.parametrize("autocast, tolerance", [(False, 1e-5), (True, 3e-2)])
def test_one_pass_head_matches_trls_chunked_head(outputs, autocast, tolerance):
    torch.manual_seed(0)
    hidden, weight = torch.randn(6, 16), torch.randn(100, 16)  # TRL's tiles: 32 of the 100 columns at a time
    targets = torch.tensor([0, 5, 99, 31, 32, 64])
    ours = head_outputs(FusedLMHead, hidden, weight, targets, autocast, outputs)
    trls = head_outputs(ChunkedLogProbFunction, hidden, weight, targets, autocast, outputs)
    for mine, theirs in zip(ours, trls):
        if theirs is None:
            assert mine is None
        else:
            torch.testing.assert_close(mine, theirs, atol=tolerance, rtol=tolerance)
    assert ours[2].abs().max() > 0.1


def test_a_head_that_changes_is_cast_again():
    """The bfloat16 copy kept on the weight follows the weight: an update in place is seen at the next call."""
    torch.manual_seed(0)
    hidden, weight, targets = torch.randn(4, 16), torch.randn(50, 16), torch.tensor([1, 2, 3, 4])
    before = head_outputs(FusedLMHead, hidden, weight, targets, True)[0]
    with torch.no_grad():
        weight.mul_(2)
    after = head_outputs(FusedLMHead, hidden, weight, targets, True)[0]
    expected = head_outputs(ChunkedLogProbFunction, hidden, weight, targets, True)[0]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected, atol=3e-2, rtol=3e-2)


def test_a_trained_head_goes_through_trls_kernel():
    torch.manual_seed(0)
    hidden, targets = torch.randn(4, 16), torch.tensor([1, 2, 3, 4])
    weight = torch.randn(50, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        FusedLMHead.apply(hidden, weight, None, targets, 1.0, 32, None, 1.0, ("log_probs",))[0].sum().backward()
    assert weight.grad is not None and weight.grad.abs().max() > 0


def test_a_second_backward_through_the_head_raises_instead_of_reusing_its_spent_buffer():
    """The backward turns the kept probabilities into the gradient in place: a retained graph cannot reuse them."""
    hidden, weight, targets = torch.randn(4, 16, requires_grad=True), torch.randn(50, 16), torch.tensor([1, 2, 3, 4])
    logps = FusedLMHead.apply(hidden, weight, None, targets, 1.0, 32, None, 1.0, ("log_probs",))[0]
    logps.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        logps.sum().backward()
