"""`selfplay eval chess`: a policy (a model, optionally with a trained LoRA adapter) on chess positions and in games.

    selfplay eval chess --positions-file puzzles.csv --adapter runs/<id>/adapters/final
    selfplay eval chess --games 20 --elo 1350,1600 --run base-elo

On positions (a file, or the loop's held-out random playouts): skill (engine reward minus what a random legal move
scores), legal-move rate, mean engine reward and expected score loss, best-move match, for EPD/puzzle rows the solve
rate, and the random-legal and greedy one-ply reference players, each with a 95% bootstrap interval. In games: matches against Stockfish at fixed
UCI_Elo levels, an Elo estimate with a 95% interval, and the games as PGN. Everything goes to runs/<run>/ as
eval.json and games.pgn.
"""

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from selfplay.config import ConfigError, check_engine_limit, make_config
from selfplay.domains import chess as chess_domain
from selfplay.domains.chess_arena import check_opponent_elo, estimate_elo, play_match
from selfplay.domains.chess_selfplay import PolicyPlayer
from selfplay.model import resolve_model
from selfplay.terminal import output_console
from selfplay.runlog import create_run_dir, write_json


@dataclass
class EvalConfig:
    model: str = "SmolLM2-135M-Instruct"
    """HF model directory or hub id (default: the built-in SmolLM2-135M-Instruct)"""
    adapter: str | None = None
    """LoRA adapter directory to serve on top of the model (e.g. runs/<id>/adapters/final)"""
    positions_file: str | None = None
    """positions to answer (.epd .pgn .fen .txt, Lichess puzzle .csv; several comma-separated, "random" for the
    loop's held-out playouts, "mate_in_one" for its mates in one); default: the loop's held-out sets (both)"""
    prompt_style: str = "san"
    """the prompt the policy was trained with: san or uci (see selfplay loop --help)"""
    eval_positions: int = 100
    """how many positions (the first ones of the file)"""
    skip_bad: bool = False
    """skip (and count) malformed lines of the position file"""
    engine_limit: str = "depth=8"
    """Stockfish search limit for scoring: depth=N, nodes=N or time=SECONDS"""
    engine_workers: int = 0
    """Stockfish processes scoring in parallel (0: one per core)"""
    engine_cache: str | None = None
    """SQLite file that keeps engine evaluations across runs"""
    max_completion_length: int = 8
    """max new tokens per answer"""
    games: int = 0
    """games per Elo level against Stockfish (0: no matches)"""
    elo: str = "1350"
    """comma-separated Stockfish UCI_Elo levels to play"""
    opponent_limit: str = "time=0.05"
    """the opponent's search limit per move"""
    retries: int = 3
    """sampled retries after an illegal answer in a game; then the game is lost"""
    run: str | None = None
    """output directory name under runs_dir (default: eval__<model>__<time>)"""
    runs_dir: str = "runs"
    """where output directories are created"""
    seed: int = 0
    """seed for openings and retries"""

    def validate(self) -> None:
        for name in ("eval_positions", "games", "retries", "engine_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        check_engine_limit("--engine-limit", self.engine_limit)
        check_engine_limit("--opponent-limit", self.opponent_limit)
        if not all(level.strip().isdigit() for level in self.elo.split(",")):
            raise ConfigError(f"--elo {self.elo!r}: expected comma-separated integers like 1350,1600")
        if self.prompt_style not in ("san", "uci"):
            raise ConfigError(f"--prompt-style {self.prompt_style!r}: choose san or uci")
        if not self.eval_positions and not self.games:
            raise ConfigError("nothing to evaluate: give --eval-positions above 0 or --games above 0")


def adapter_rank(adapter: str) -> int:
    try:
        return int(json.loads((Path(adapter) / "adapter_config.json").read_text())["r"])
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(f"--adapter {adapter}: not a PEFT LoRA adapter directory ({error})") from None


def play_matches(policy, tokenizer, *, levels: list[int], games: int, opponent_limit: str, retries: int, seed: int,
                 style: str, max_tokens: int, pgn_path: Path, console: Console) -> dict:
    """`games` games against Stockfish at each UCI_Elo level (the served policy answers greedily; PGN appended to
    pgn_path), printed and returned as {"matches": [...], "elo": {"estimate", "low", "high"}}."""
    from rewards.chess_engine import parse_limit

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


def run_chess_eval(config: EvalConfig, console: Console | None = None, on_run_dir=None) -> dict:
    console = console or output_console()
    levels = [int(level) for level in config.elo.split(",")]  # validated by the CLI
    model_path = resolve_model(config.model)
    lora_rank = adapter_rank(config.adapter) if config.adapter else None
    loop_like = make_config(eval_file=config.positions_file, eval_positions=config.eval_positions, skip_bad=config.skip_bad,
                           engine_limit=config.engine_limit, engine_workers=config.engine_workers,
                           engine_cache=config.engine_cache, prompt_style=config.prompt_style)
    rows = chess_domain.eval_rows(loop_like) if config.eval_positions else []  # a bad file stops here, nothing made
    for level in levels if config.games else []:
        try:
            check_opponent_elo(level)
        except ValueError as error:
            raise ConfigError(f"--elo: {error}") from None
    name = config.run or f"eval__{Path(config.model.rstrip('/')).name}__{time.strftime('%Y%m%d-%H%M%S')}"
    out = create_run_dir(config.runs_dir, name)
    if on_run_dir:
        on_run_dir(out)

    from transformers import AutoTokenizer

    from selfplay.evaluate import eval_table, evaluate
    from selfplay.policy import VLLMPolicy

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rewards = chess_domain.rewards(loop_like)
    policy = None
    try:
        policy = VLLMPolicy(model_path, lora_rank=lora_rank, seed=config.seed)
        if config.adapter:
            policy.load_adapter(config.adapter, 1)
        result: dict = {"model": model_path, "adapter": config.adapter, "positions_file": config.positions_file}
        if rows:
            result["positions"] = evaluate(
                policy, tokenizer, rows, rewards.funcs, max_tokens=config.max_completion_length,
                stop=chess_domain.stop_strings(loop_like),
                references=lambda rows, scores: chess_domain.eval_references(rows, scores, rewards))
            console.print(eval_table("positions (95% intervals)", chess_domain.EVAL_METRICS, result["positions"]))
        if config.games:
            result |= play_matches(policy, tokenizer, levels=levels, games=config.games, opponent_limit=config.opponent_limit,
                                   retries=config.retries, seed=config.seed, style=config.prompt_style,
                                   max_tokens=config.max_completion_length, pgn_path=out / "games.pgn", console=console)
        write_json(out / "eval.json", result)
        return result
    finally:
        if policy is not None:
            policy.close()
        rewards.close()
