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
from dataclasses import dataclass, field
from pathlib import Path

import chess
from datasets import Dataset

from rewards.chess import ChessRewards, format_reward, legal_move_reward, solve_reward
from rewards.chess_engine import EnginePool, parse_limit
from selfplay.config import ConfigError, check_engine_limit
from selfplay.domains.base import Domain, Rewards
from selfplay.domains.chess_arena import check_opponent_elo, estimate_elo, play_match
from selfplay.domains.chess_reference import reference_scores
from selfplay.domains.chess_positions import Position, PositionFileError, parse_position_mix, read_positions
from selfplay.domains.chess_tactics import mate_in_one_positions
from selfplay.domains.chess_selfplay import PolicyPlayer, RefreshEachIteration, SelfPlayPositions, live_dataset

EVAL_SEED = 1_000_003  # training seeds are small integers: the held-out positions never overlap them by seed
DEFAULT_EVAL_SETS = "random,mate_in_one"
ONE_MOVE = [" ", "\n"]  # stop strings of a SAN answer: it ends at the first space or newline
SYSTEM_PROMPTS = {
    "san": "You are a chess engine. Reply with one legal move in SAN and nothing else.",
    "moves": "Reply with one legal move in SAN.",
    "uci": "You are a chess engine. Reply with one legal move in UCI notation and nothing else.",
}
PROMPT_STYLES = tuple(SYSTEM_PROMPTS)


def answers_in_san(style: str) -> bool:
    return style != "uci"


def check_prompt_style(style: str) -> None:
    if style not in PROMPT_STYLES:
        raise ConfigError(f"--prompt-style {style!r}: choose {', '.join(PROMPT_STYLES[:-1])} or {PROMPT_STYLES[-1]}")


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


def position_prompt(fen: str, style: str = "moves") -> list[dict]:
    """Chat messages asking for a move in one of three styles:

    - "san": the FEN and the legal moves in SAN (captures, checks and mates marked: `Nxe5`, `Qh7+`, `Re8#`), in an
      order shuffled per position (seeded by the FEN), so that no place in the list is a fixed strategy;
    - "moves": the side to move and the same list, no FEN, the request only in a short system prompt (111 tokens on
      average against san's 189: the fine-tune and GRPO cost per token of prompt);
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
        user = f"{side} to move.\nLegal moves: {' '.join(moves)}"
        if style == "san":
            user = f"FEN: {fen}\n{user}\nAnswer with one of the legal moves."
    return [{"role": "system", "content": SYSTEM_PROMPTS[style]}, {"role": "user", "content": user}]


def position_row(position: Position, style: str) -> dict:
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
    return held_out_rows(config.eval_file or DEFAULT_EVAL_SETS, config, config.eval_positions)


def file_rows(config, path: str) -> list[dict]:
    """`selfplay eval chess --file`: every position of the files (comma-separated; "random" and "mate_in_one":
    `eval_positions` generated ones)."""
    return held_out_rows(path, config, None)


def held_out_rows(sources: str, config, file_positions: int | None) -> list[dict]:
    rows = []
    for source in sources.split(","):
        if source == "random":
            name, positions = "playouts", [Position(f) for f in random_positions(config.eval_positions, seed=EVAL_SEED)]
        elif source == "mate_in_one":
            name, positions = source, mate_in_one_positions(config.eval_positions, seed=EVAL_SEED)
        else:
            positions = read_positions(source, skip_bad=config.skip_bad)[0][:file_positions]
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


def warm_start(config, model_path: str, run_dir: Path, rewards: Rewards, console, **served) -> str:
    """Fine-tune on Stockfish's best move in `config.warm_start` training positions (`selfplay sft --targets engine`,
    LoRA merged), into run_dir/warm/model; GRPO then starts from that model. Returns its directory. The targets come
    from the engine, not from the served policy, and the fine-tune searches with engines of its own (`rewards`: the
    loop's, and `served`: the loop's tokenizer and rows, are unused here; its policy is closed first, so that the
    fine-tune has vLLM's memory)."""
    from selfplay.sft import SFTConfig, run_sft

    served["policy"].close()

    positions = "random" if "selfplay" in config.positions else config.positions
    sft = SFTConfig(model=model_path, targets="engine", positions=positions, skip_bad=config.skip_bad,
                    prompt_style=config.prompt_style, examples=config.warm_start, engine_limit=config.engine_limit,
                    engine_workers=config.engine_workers, engine_cache=config.engine_cache, run="warm",
                    runs_dir=str(run_dir), seed=config.seed)
    return run_sft(sft, console)["model"]


def engine_pool(config) -> EnginePool:
    """The engine pool the settings ask for: `engine_workers` processes of Stockfish or of the `engine` commands
    (0: one per core, or per command) searching to `engine_limit`, with the `engine_cache` file."""
    return EnginePool(size=config.engine_workers or None, limit=parse_limit(config.engine_limit),
                      commands=config.engine, cache_path=config.engine_cache)


def score_loss_of(engine_reward):
    """`score_loss`: the expected score the answer gives away against the engine's best move (1 when illegal), lower
    is better, from `engine_reward`."""

    def score_loss(prompts, completions, *, fen, **kwargs) -> list[float | None]:
        return [None if r is None else 1.0 - r for r in engine_reward(prompts, completions, fen=fen)]

    return score_loss


def rewards(config) -> Rewards:
    """The reward functions, their weights (`--train-reward`, engine or rank, trains, with `--best-move-bonus` on
    the engine's own move; the others are logged metrics), and the engine pool they share, closed at the end."""
    chess_rewards = ChessRewards(engine_pool(config))
    funcs = [chess_rewards.engine_reward, chess_rewards.rank_reward, legal_move_reward, chess_rewards.best_move_reward,
             solve_reward, format_reward, score_loss_of(chess_rewards.engine_reward)]
    weights = [float(f.__name__ == f"{config.train_reward}_reward") for f in funcs]
    weights[funcs.index(chess_rewards.best_move_reward)] += config.best_move_bonus
    return Rewards(funcs, weights, [chess_rewards])


def stop_strings(config) -> list[str] | None:
    """SAN prompts get one move: the sample ends at the first space or newline (the move is the whole answer, and
    no token after it gets the move's advantage). UCI prompts run to the token budget, as they first did."""
    return ONE_MOVE if answers_in_san(config.prompt_style) else None


def eval_references(rows: list[dict], scores: dict[str, list], rewards: Rewards) -> dict[str, list]:
    """Per held-out row: the random-legal and greedy one-ply players' engine rewards, and the policy's skill (its
    engine reward minus the random-legal one) and the greedy player's beside it, searched by the rewards' pool."""
    references = reference_scores([chess.Board(row["fen"]) for row in rows], rewards.resources[0].pool)
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


@dataclass
class ChessSettings:
    engine_limit: str = "depth=8"
    """Stockfish search limit for rewards: depth=N, nodes=N or time=SECONDS"""
    engine_workers: int = 0
    """Stockfish processes scoring in parallel (0: one per core, or one per --engine)"""
    engine: list[str] = field(default_factory=list)
    """a UCI engine command scoring the rewards instead of the local Stockfish, repeatable: any command that speaks
    UCI on stdin/stdout, e.g. "ssh box1 stockfish" (one process per --engine; with --engine-workers N, N processes
    taking the commands in turn)"""
    engine_cache: str | None = None
    """SQLite file that keeps engine evaluations across runs (unset: in memory only)"""
    prompt_style: str = "moves"
    """chess prompt: moves (the side to move and the legal moves in SAN, shuffled per position, one-move answers),
    san (the same after the FEN, for a model that reads a board) or uci (FEN, board, sorted UCI list, answers run to
    the token budget: the first prompt)"""
    train_reward: str = "engine"
    """chess reward the policy trains on: engine (expected score against the best move) or rank (rank of the move
    among the legal moves by engine score); the other rewards are logged"""
    best_move_bonus: float = 0.0
    """weight of a bonus for the engine's best move (best_move_reward, 1 or 0) added to the train reward, as
    Chess-R1 did: the engine reward scores every move that keeps the balance near 1, the bonus singles out the best"""
    positions: str = "random:3,mate_in_one:1"
    """training positions: random (seeded playouts), mate_in_one (generated), a file (.epd .pgn .fen .txt, Lichess
    puzzle .csv), or a weighted mix like puzzles.csv:3,random:1"""
    selfplay_games: int = 4
    """games per self-play round (one round per iteration) when the positions mix has selfplay"""
    selfplay_plies: int = 60
    """plies after which a self-play game stops"""
    selfplay_opponent: str = "self"
    """self-play opponent: self, or a Stockfish UCI_Elo level (1350..2850 for Stockfish 15)"""
    train_positions: int = 1000
    """size of the training prompt pool"""
    eval_positions: int = 100
    """size of each held-out evaluation set, scored before and after training (0 skips evaluation)"""
    eval_file: str | None = None
    """held-out position sets, comma-separated: files (the first eval_positions of each), random (playouts) or
    mate_in_one (generated), each summarised on its own; unset: random,mate_in_one"""
    games: int | None = None
    """games against Stockfish at each --elo level once the policy is scored (after training, or in selfplay eval),
    the policy alternating colours; unset: 0, or the preset's"""
    elo: str = "1350"
    """the UCI_Elo levels of the Stockfish that --games plays, comma-separated (1350..2850 for Stockfish 15)"""
    opponent_limit: str = "time=0.05"
    """the search limit of that Stockfish per move"""
    retries: int = 3
    """sampled retries after an illegal answer in a game; then the game is lost"""

    def validate(self, config) -> None:
        for name in ("engine_workers", "train_positions", "eval_positions", "games", "retries", "best_move_bonus"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        check_engine_limit("--engine-limit", self.engine_limit)
        check_engine_limit("--opponent-limit", self.opponent_limit)
        if not all(level.strip().isdigit() for level in str(self.elo).split(",")):
            raise ConfigError(f"--elo {self.elo!r}: expected comma-separated integers like 1350,1600")
        try:
            sources = [source for source, _ in parse_position_mix(self.positions)]
        except ValueError as error:
            raise ConfigError(f"--positions: {error}") from None
        if "selfplay" in sources and getattr(config, "full_finetune", False):
            raise ConfigError("--positions selfplay needs the LoRA path (vLLM plays the games); drop --full-finetune")
        if self.selfplay_opponent != "self" and not self.selfplay_opponent.isdigit():
            raise ConfigError(f"--selfplay-opponent {self.selfplay_opponent!r}: expected self or a UCI_Elo like 1350")
        check_prompt_style(self.prompt_style)
        if self.train_reward not in ("engine", "rank"):
            raise ConfigError(f"--train-reward {self.train_reward!r}: choose engine or rank")
        for level in elo_levels(self) if self.games else []:  # one this Stockfish cannot play stops here, not later
            try:
                check_opponent_elo(level)
            except ValueError as error:
                raise ConfigError(f"--elo: {error}") from None


def elo_levels(config) -> list[int]:
    return [int(level) for level in str(config.elo).split(",")]


def play_matches(policy, tokenizer, *, levels: list[int], games: int, opponent_limit: str, retries: int, seed: int,
                 style: str, max_tokens: int, pgn_path: Path, console) -> dict:
    """`games` games against Stockfish at each UCI_Elo level (the served policy answers greedily; PGN appended to
    pgn_path), printed and returned as {"matches": [...], "elo": {"estimate", "low", "high"}}."""
    import dataclasses
    import math

    player = PolicyPlayer(policy, tokenizer, max_tokens=max_tokens, temperature=0.0, style=style)
    matches = [play_match(player, opponent_elo=level, games=games, engine_limit=parse_limit(opponent_limit), seed=seed,
                          retries=retries, pgn_path=pgn_path) for level in levels]
    elo, low, high = estimate_elo(matches)
    for m in matches:
        console.print(f"[bold]games[/] {m.opponent}: +{m.wins} ={m.draws} -{m.losses} ({m.forfeits} forfeits), "
                      f"score {m.score:.3f}", highlight=False)
    if math.isinf(low) or math.isinf(high):  # no points at all, or every point: one side of the rating is open
        bound = f"below {high:.0f}" if math.isinf(low) else f"above {low:.0f}"
        console.print(f"[bold]Elo[/] {bound} (95%; {'no game won or drawn' if math.isinf(low) else 'every game won'})")
    else:
        console.print(f"[bold]Elo[/] {elo:.0f} (95% interval {low:.0f} .. {high:.0f})")
    # an unbounded side (all games lost or all won) is null in JSON
    return {"matches": [dataclasses.asdict(m) | {"score": m.score} for m in matches],
            "elo": {k: v if math.isfinite(v) else None for k, v in {"estimate": elo, "low": low, "high": high}.items()}}


class ChessDomain(Domain):
    """Chess moves for positions, scored by Stockfish."""

    name = "chess"
    Settings = ChessSettings
    EVAL_METRICS = EVAL_METRICS
    HEADLINE = "reward/legal_move_reward"
    SUCCESS = "best_move_reward"
    SAMPLE_COLUMNS = ("fen",)  # the position: the default prompt does not show it
    # GRPO's learning rate: after the warm start, 3e-4 and 1e-4 undid what the fine-tune taught and 3e-5 kept it; the
    # warm start on 1000 engine moves is the only stage that taught tactics (bench/learning.py); answers are one move
    # micro-batch 16: two groups a pass, a 1.2x faster step than one (bench/step_profile.py), 0.11 GB more at the peak
    defaults = {"learning_rate": 3e-5, "warm_start": 1000, "temperature": 0.8, "max_completion_length": 8, "games": 0,
                "micro_batch_size": 16}
    # long: the default recipe with four times the fine-tune, twice the iterations and a 20-game match at the end,
    # <= 2 h on 2 cores
    presets = {"long": {"warm_start": 4000, "steps": 40, "games": 20}}

    train_rows = staticmethod(train_rows)
    eval_rows = staticmethod(eval_rows)
    file_rows = staticmethod(file_rows)
    rewards = staticmethod(rewards)
    stop_strings = staticmethod(stop_strings)
    training_data = staticmethod(training_data)
    eval_references = staticmethod(eval_references)
    warm_start = staticmethod(warm_start)

    def sample_rows(self, config, count: int) -> list[dict]:
        return [position_row(Position(fen), config.prompt_style) for fen in random_positions(count, seed=config.seed)]

    def describe(self, config, rewards: Rewards) -> str:
        engines = f"{len(config.engine)} engine commands" if config.engine else "Stockfish"
        return f"{engines}, {config.engine_limit}, {rewards.resources[0].pool.size} processes"

    def plays_after_training(self, config) -> bool:
        return bool(config.games)

    def after_training(self, config, policy, tokenizer, run_dir, console) -> dict:
        """--games against Stockfish at each --elo: the policy answers greedily (a retry after an illegal answer
        samples), the games go to run_dir/games.pgn."""
        return play_matches(policy, tokenizer, levels=elo_levels(config), games=config.games, seed=config.seed,
                            opponent_limit=config.opponent_limit, retries=config.retries, style=config.prompt_style,
                            max_tokens=config.max_completion_length, pgn_path=run_dir / "games.pgn", console=console)
