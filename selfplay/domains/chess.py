"""The chess domain: positions from seeded random playouts, a prompt per position, Stockfish rewards.

A training example is a row `{"prompt": [chat messages], "fen": FEN, "bm": [UCI] | None, "am": [UCI] | None}`; the
columns reach the reward functions in `rewards.chess`. Training positions come from `--positions`: "random" (seeded
random playouts), "mate_in_one" (generated, see `chess_tactics`), a position file (EPD, PGN, FEN list, Lichess
puzzle CSV; see `chess_positions`), `selfplay` (positions from the policy's own games, refreshed every iteration; see
`chess_selfplay`), or a weighted mix such as `puzzles.csv:3,selfplay:1`. The held-out sets are `--eval-file`, or
random playouts from a seed the training positions never use; their positions are removed from the training rows.
Held-out figures come with the random-legal and greedy reference players beside them (`chess_reference`).
"""

import functools
import random
import weakref
from pathlib import Path

import chess
from datasets import Dataset

from rewards.chess import ChessRewards, format_reward, legal_move_reward, solve_reward
from rewards.chess_engine import EnginePool, parse_limit
from selfplay.domains.chess_reference import reference_scores
from selfplay.domains.chess_positions import Position, PositionFileError, parse_position_mix, read_positions
from selfplay.domains.chess_tactics import mate_in_one_positions
from selfplay.domains.chess_selfplay import PolicyPlayer, RefreshEachIteration, SelfPlayPositions, live_dataset

EVAL_SEED = 1_000_003  # training seeds are small integers: the held-out positions never overlap them by seed
DEFAULT_EVAL_SETS = "random,mate_in_one"
ONE_MOVE = [" ", "\n"]  # stop strings of a SAN answer: it ends at the first space or newline
SYSTEM_PROMPTS = {
    "san": "You are a chess engine. Reply with one legal move in SAN and nothing else.",
    "uci": "You are a chess engine. Reply with one legal move in UCI notation and nothing else.",
}


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


def position_prompt(fen: str, style: str = "san") -> list[dict]:
    """Chat messages asking for a move in one of two styles:

    - "san": the FEN and the legal moves in SAN (captures, checks and mates marked: `Nxe5`, `Qh7+`, `Re8#`), in an
      order shuffled per position (seeded by the FEN), so that no place in the list is a fixed strategy;
    - "uci": the FEN, an ASCII board and the legal moves in UCI, sorted (the first prompt: its policy learned to copy
      the head of the list).
    """
    board = chess.Board(fen)
    side = "White" if board.turn == chess.WHITE else "Black"
    if style == "uci":
        legal = " ".join(sorted(move.uci() for move in board.legal_moves))
        # The legal moves come last, right before the request: the base model then copies a move from the list far
        # more often (greedy legal rate 6% -> 50% on 50 held-out positions) than when they sit mid-prompt.
        user = f"FEN: {fen}\n{board}\n{side} to move.\nLegal moves: {legal}\nAnswer with one of the legal moves."
    else:
        moves = [board.san(move) for move in board.legal_moves]
        random.Random(fen).shuffle(moves)
        user = f"FEN: {fen}\n{side} to move.\nLegal moves: {' '.join(moves)}\nAnswer with one of the legal moves."
    return [{"role": "system", "content": SYSTEM_PROMPTS[style]}, {"role": "user", "content": user}]


def position_row(position: Position, style: str = "san") -> dict:
    return {
        "prompt": position_prompt(position.fen, style),
        "fen": position.fen,
        "bm": list(position.best_moves) or None,
        "am": list(position.avoid_moves) or None,
    }


def source_positions(source: str, count: int, *, seed: int, skip_bad: bool) -> list[Position]:
    """`count` positions from one source: "random" playouts, generated "mate_in_one" positions (bm: the mates) or a
    position file (sampled when it holds more)."""
    if source == "random":
        return [Position(fen) for fen in random_positions(count, seed=seed)]
    if source == "mate_in_one":
        return mate_in_one_positions(count, seed=seed)
    positions, _ = read_positions(source, skip_bad=skip_bad)
    return random.Random(seed).sample(positions, min(count, len(positions)))


def eval_rows(config) -> list[dict]:
    """The held-out sets, each row's "set" naming its own: every comma-separated entry of `eval_file` (a file: its
    first `eval_positions`; "random" or "mate_in_one": that many generated from a seed never trained on), by default
    random playouts and mates in one."""
    rows = []
    for source in (config.eval_file or DEFAULT_EVAL_SETS).split(","):
        if source == "random":
            name, positions = "playouts", [Position(f) for f in random_positions(config.eval_positions, seed=EVAL_SEED)]
        elif source == "mate_in_one":
            name, positions = source, mate_in_one_positions(config.eval_positions, seed=EVAL_SEED)
        else:
            positions = read_positions(source, skip_bad=config.skip_bad)[0][: config.eval_positions]
            name = Path(source).stem
        rows += [{**position_row(p, config.prompt_style), "set": name} for p in positions]
    return rows


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
    rows = [position_row(p, config.prompt_style) for p in positions if p.fen not in excluded]
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
    player = PolicyPlayer(policy, tokenizer, max_tokens=config.max_completion_length, temperature=config.temperature,
                          retry_temperature=config.temperature, style=config.prompt_style)
    opponent = None if config.selfplay_opponent == "self" else int(config.selfplay_opponent)
    pool = SelfPlayPositions(player, games=config.selfplay_games, max_plies=config.selfplay_plies,
                             opponent_elo=opponent, seed=config.seed, exclude={row["fen"] for row in held_out})
    pool.refresh()  # the first round, with the policy as it starts
    share = mix["selfplay"] / sum(mix.values())
    to_row = functools.partial(position_row, style=config.prompt_style)
    return live_dataset(rows, pool, share=share, seed=config.seed, to_row=to_row), [RefreshEachIteration(pool, stats)]


def warm_start(config, model_path: str, run_dir: Path, pool: EnginePool, console, **served) -> str:
    """Fine-tune on Stockfish's best move in `config.warm_start` training positions (`selfplay sft --targets engine`,
    LoRA merged), into run_dir/warm/model; GRPO then starts from that model. Returns its directory. The targets come
    from the engine, not from the served policy, and the fine-tune searches with engines of its own (`pool`: the
    loop's, and `served`: the loop's policy, tokenizer and rows, are unused here)."""
    from selfplay.sft import SFTConfig, run_sft

    positions = "random" if "selfplay" in config.positions else config.positions
    sft = SFTConfig(model=model_path, targets="engine", positions=positions, skip_bad=config.skip_bad,
                    prompt_style=config.prompt_style, examples=config.warm_start, engine_limit=config.engine_limit,
                    engine_workers=config.engine_workers, engine_cache=config.engine_cache, run="warm",
                    runs_dir=str(run_dir), seed=config.seed)
    return run_sft(sft, console)["model"]


def engine_pool(config) -> EnginePool:
    """The engine pool the settings ask for: `engine_workers` Stockfish processes (0: one per core) searching to
    `engine_limit`, with the `engine_cache` file."""
    return EnginePool(size=config.engine_workers or None, limit=parse_limit(config.engine_limit),
                      cache_path=config.engine_cache)


def score_loss_of(engine_reward):
    """`score_loss`: the expected score the answer gives away against the engine's best move (1 when illegal), lower
    is better, from `engine_reward`."""

    def score_loss(prompts, completions, *, fen, **kwargs) -> list[float | None]:
        return [None if r is None else 1.0 - r for r in engine_reward(prompts, completions, fen=fen)]

    return score_loss


# The loop hands eval_references only (rows, scores): it finds the engine pool of the rewards that the latest
# reward_funcs made here. Held weakly: whoever called reward_funcs owns the pool and closes it.
_pool_in_use: weakref.ref | None = None


def reward_funcs(config) -> tuple[list, list[float], EnginePool]:
    """The reward functions, their weights (`--train-reward`, engine or rank, trains; the others are logged
    metrics), and the engine pool they share, to close at the end."""
    global _pool_in_use
    rewards = ChessRewards(engine_pool(config))
    _pool_in_use = weakref.ref(rewards.pool)
    funcs = [rewards.engine_reward, rewards.rank_reward, legal_move_reward, rewards.best_move_reward, solve_reward,
             format_reward, score_loss_of(rewards.engine_reward)]
    weights = [float(f.__name__ == f"{config.train_reward}_reward") for f in funcs]
    return funcs, weights, rewards.pool


def stop_strings(config) -> list[str] | None:
    """SAN prompts get one move: the sample ends at the first space or newline (the move is the whole answer, and
    no token after it gets the move's advantage). UCI prompts run to the token budget, as they first did."""
    return ONE_MOVE if config.prompt_style == "san" else None


def eval_references(rows: list[dict], scores: dict[str, list]) -> dict[str, list]:
    """Per held-out row: the random-legal and greedy one-ply players' engine rewards, and the policy's skill (its
    engine reward minus the random-legal one) and the greedy player's beside it. Searched by the engine pool of
    `reward_funcs`, which must have run."""
    pool = _pool_in_use() if _pool_in_use else None
    if pool is None:
        raise RuntimeError("eval_references searches with the engine pool of reward_funcs(config): call that first")
    references = reference_scores([chess.Board(row["fen"]) for row in rows], pool)
    random_legal = references["random_legal"]
    return {
        "skill": [None if e is None else e - r for e, r in zip(scores["engine_reward"], random_legal)],
        "greedy_skill": [g - r for g, r in zip(references["greedy_one_ply"], random_legal)],
        **references,
    }


# What the loop prints of a held-out evaluation, the headline first. Skill = engine reward - random legal reward;
# the greedy one-ply player's skill is the reference beside it.
EVAL_METRICS = {
    "skill": "skill",
    "engine_reward": "engine reward",
    "legal_move_reward": "legal",
    "best_move_reward": "best move",
    "solve_reward": "solved (bm)",
    "greedy_skill": "greedy skill (ref)",
    "random_legal": "random legal (ref)",
}
HEADLINE = "reward/legal_move_reward"
