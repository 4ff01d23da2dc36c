"""The chess domain: positions from seeded random playouts, a prompt per position, Stockfish rewards.

A training example is a row `{"prompt": [chat messages], "fen": FEN, "bm": [UCI] | None, "am": [UCI] | None}`; the
columns reach the reward functions in `rewards.chess`. Training positions come from `--positions`: "random" (seeded
random playouts), a position file (EPD, PGN, FEN list, Lichess puzzle CSV; see `chess_positions`), `selfplay`
(positions from the policy's own games, refreshed every iteration; see `chess_selfplay`), or a weighted mix such as
`puzzles.csv:3,selfplay:1`. The held-out set is `--eval-file`, or random playouts from a seed the
training positions never use; its positions are removed from the training rows.
"""

import random

import chess
from datasets import Dataset

from rewards.chess import (
    best_move_reward,
    engine_reward,
    format_reward,
    legal_move_reward,
    solve_reward,
    use_engine_pool,
)
from rewards.chess_engine import EnginePool, parse_limit
from selfplay.domains.chess_positions import Position, PositionFileError, parse_position_mix, read_positions
from selfplay.domains.chess_selfplay import PolicyPlayer, RefreshEachIteration, SelfPlayPositions, live_dataset

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


def position_row(position: Position) -> dict:
    return {
        "prompt": position_prompt(position.fen),
        "fen": position.fen,
        "bm": list(position.best_moves) or None,
        "am": list(position.avoid_moves) or None,
    }


def source_positions(source: str, count: int, *, seed: int, skip_bad: bool) -> list[Position]:
    """`count` positions from one source: "random" playouts or a position file (sampled when it holds more)."""
    if source == "random":
        return [Position(fen) for fen in random_positions(count, seed=seed)]
    positions, _ = read_positions(source, skip_bad=skip_bad)
    return random.Random(seed).sample(positions, min(count, len(positions)))


def eval_rows(config) -> list[dict]:
    """The held-out set: the first `eval_positions` of `eval_file`, or random playouts from a seed never trained on."""
    if config.eval_file:
        positions = read_positions(config.eval_file, skip_bad=config.skip_bad)[0][: config.eval_positions]
    else:
        positions = [Position(fen) for fen in random_positions(config.eval_positions, seed=EVAL_SEED)]
    return [position_row(p) for p in positions]


def train_rows(config, held_out: list[dict]) -> list[dict]:
    """`train_positions` rows from the fixed sources of the `positions` mix (random playouts, files), in proportion
    to their weights, held-out positions removed. Self-play positions come later, from `training_data`."""
    mix = parse_position_mix(config.positions)
    total = sum(weight for _, weight in mix)
    excluded = {row["fen"] for row in held_out}
    positions = []
    for i, (source, weight) in enumerate(mix):
        if source != "selfplay":
            count = max(1, round(config.train_positions * weight / total))
            positions += source_positions(source, count, seed=config.seed + i, skip_bad=config.skip_bad)
    rows = [position_row(p) for p in positions if p.fen not in excluded]
    if positions and not rows:
        raise PositionFileError(f"--positions {config.positions}: no training positions left after the held-out set")
    random.Random(config.seed).shuffle(rows)
    return rows


def training_data(config, rows: list[dict], held_out: list[dict], policy, tokenizer, stats: dict) -> tuple:
    """(TRL train dataset, extra trainer callbacks): the fixed rows, or with `selfplay` in the mix, an endless stream
    that draws that share of its rows from the positions of the policy's latest self-play games."""
    mix = dict(parse_position_mix(config.positions))
    if "selfplay" not in mix:
        return Dataset.from_list(rows), []
    player = PolicyPlayer(policy, tokenizer, max_tokens=config.max_completion_length,
                          temperature=config.temperature, retry_temperature=config.temperature)
    opponent = None if config.selfplay_opponent == "self" else int(config.selfplay_opponent)
    pool = SelfPlayPositions(player, games=config.selfplay_games, max_plies=config.selfplay_plies,
                             opponent_elo=opponent, seed=config.seed, exclude={row["fen"] for row in held_out})
    pool.refresh()  # the first round, with the policy as it starts
    share = mix["selfplay"] / sum(mix.values())
    return live_dataset(rows, pool, share=share, seed=config.seed, to_row=position_row), [RefreshEachIteration(pool, stats)]


def score_loss(prompts, completions, *, fen, **kwargs) -> list[float | None]:
    """Expected score the answer gives away against the engine's best move (1 when illegal): lower is better."""
    return [None if r is None else 1.0 - r for r in engine_reward(prompts, completions, fen=fen)]


def reward_funcs(config) -> tuple[list, list[float], EnginePool]:
    """The reward functions, their weights (only the engine reward trains; the others are logged metrics), and
    the engine pool they share, to close at the end."""
    pool = EnginePool(size=config.engine_workers or None, limit=parse_limit(config.engine_limit),
                      cache_path=config.engine_cache)
    use_engine_pool(pool)
    funcs = [engine_reward, legal_move_reward, best_move_reward, solve_reward, format_reward, score_loss]
    return funcs, [1.0, 0.0, 0.0, 0.0, 0.0, 0.0], pool


HEADLINE = "reward/legal_move_reward"
STOP = None
