"""The chess domain with one dense reward added (weight 1), for tiny random models: such a model never names a legal
move, so the real Stockfish rewards alone would give every group zero spread and TRL no gradient. A plug-in domain
as a user writes one (selfplay.domains.Domain), loaded by name:

    PYTHONPATH=tests selfplay loop --domain dense_domain:DenseChess --model TINY ...
"""

from rewards.completions import completion_text
from selfplay.domains.base import Rewards
from selfplay.domains.chess import ChessDomain

DENSE = "dense_domain:DenseChess"


def move_chars_reward(prompts, completions, **kwargs):
    """Share of characters that can appear in a UCI move: random text has spread, so GRPO gets a gradient."""
    texts = [completion_text(c) for c in completions]
    return [sum(ch in "abcdefgh12345678" for ch in t) / max(len(t), 1) for t in texts]


class DenseChess(ChessDomain):
    """Chess, plus a dense reward that random text has spread on."""

    name = "dense-chess"

    def rewards(self, config) -> Rewards:
        rewards = ChessDomain.rewards(config)
        return Rewards([*rewards.funcs, move_chars_reward], [*rewards.weights, 1.0], rewards.resources)
