"""A chess reward of your own in 10 lines: 1 when the answer is a legal move that gives check, else 0.

    selfplay rewards check my_rewards:gives_check --domain chess      # from this folder: try it on sample rows
    selfplay loop --domain chess --reward my_rewards:gives_check=0.1   # train on it beside the engine reward
"""

import chess


def gives_check(prompts, completions, fen, **kwargs):
    rewards = []
    for completion, position in zip(completions, fen):
        text = completion[0]["content"] if isinstance(completion, list) else completion
        board = chess.Board(position)
        try:
            rewards.append(float(board.gives_check(board.parse_san(text.strip()))))
        except ValueError:  # not a legal move: no check
            rewards.append(0.0)
    return rewards
