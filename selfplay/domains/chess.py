"""The chess domain: positions from seeded random playouts, a prompt per position, Stockfish rewards.

A training example is a row `{"prompt": [chat messages], "fen": FEN}`; the `fen` column reaches the reward
functions in `rewards.chess`. The held-out evaluation set comes from a seed the training positions never use.
"""

import random

import chess

from rewards.chess import EngineReward, StockfishJudge, legal_move_reward

EVAL_SEED = 1_000_003  # training seeds are small integers: the held-out positions never overlap them by seed
SYSTEM_PROMPT = "You are a chess engine. Reply with one legal move in UCI notation and nothing else."


def random_positions(count: int, *, seed: int, min_plies: int = 2, max_plies: int = 40) -> list[str]:
    """FENs reached by uniformly random legal play from the start; never a finished game; no duplicates."""
    rng = random.Random(seed)
    fens: list[str] = []
    seen: set[str] = set()
    while len(fens) < count:
        board = chess.Board()
        for _ in range(rng.randint(min_plies, max_plies)):
            moves = list(board.legal_moves)
            board.push(rng.choice(moves))
            if board.is_game_over():
                board.pop()
                break
        fen = board.fen()
        if fen not in seen:
            seen.add(fen)
            fens.append(fen)
    return fens


def position_prompt(fen: str) -> list[dict]:
    """Chat messages asking for a move: the FEN, an ASCII board and the legal moves in UCI."""
    board = chess.Board(fen)
    side = "White" if board.turn == chess.WHITE else "Black"
    legal = " ".join(sorted(move.uci() for move in board.legal_moves))
    # The legal moves come last, right before the request: the base model then copies a move from the list far
    # more often (greedy legal rate 6% -> 50% on 50 held-out positions) than when they sit mid-prompt.
    user = f"FEN: {fen}\n{board}\n{side} to move.\nLegal moves: {legal}\nAnswer with one of the legal moves."
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def make_rows(fens: list[str]) -> list[dict]:
    return [{"prompt": position_prompt(fen), "fen": fen} for fen in fens]


def train_rows(count: int, *, seed: int) -> list[dict]:
    return make_rows(random_positions(count, seed=seed))


def eval_rows(count: int = 100) -> list[dict]:
    return make_rows(random_positions(count, seed=EVAL_SEED))


def reward_funcs(*, depth: int) -> tuple[list, list[float], StockfishJudge]:
    """The reward functions, their weights, and the engine to close at the end (legality is logged, weight 0)."""
    judge = StockfishJudge(depth=depth)
    return [EngineReward(judge), legal_move_reward], [1.0, 0.0], judge


HEADLINE = "reward/legal_move_reward"
