"""The chess domain with one dense reward added (weight 1), for tiny random models: such a model never names a legal
move, so the real Stockfish rewards alone would give every group zero spread and TRL no gradient.

    python tests/dense_domain.py loop --model TINY ...   # `selfplay` with this domain, as its own process (kill -9)
"""

import sys
from types import SimpleNamespace


def move_chars_reward(prompts, completions, **kwargs):
    """Share of characters that can appear in a UCI move: random text has spread, so GRPO gets a gradient."""
    from rewards.completions import completion_text

    texts = [completion_text(c) for c in completions]
    return [sum(ch in "abcdefgh12345678" for ch in t) / max(len(t), 1) for t in texts]


def dense_chess_domain() -> SimpleNamespace:
    from selfplay.domains import chess as chess_domain

    def reward_funcs(config):
        funcs, weights, engines = chess_domain.reward_funcs(config)
        return [*funcs, move_chars_reward], [*weights, 1.0], engines

    return SimpleNamespace(
        train_rows=chess_domain.train_rows,
        eval_rows=chess_domain.eval_rows,
        training_data=chess_domain.training_data,
        reward_funcs=reward_funcs,
        HEADLINE=chess_domain.HEADLINE,
        stop_strings=chess_domain.stop_strings,
        eval_references=chess_domain.eval_references,
        EVAL_METRICS=chess_domain.EVAL_METRICS,
        warm_start=chess_domain.warm_start,
    )


if __name__ == "__main__":
    from selfplay import loop
    from selfplay.cli import main

    loop.get_domain = lambda name: dense_chess_domain()
    sys.exit(main())
