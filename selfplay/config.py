"""The loop's settings: one dataclass, a field per flag, parsed from the command line and saved in the run dir.

    selfplay loop --domain chess --steps 20 --grpo loss_type=grpo --grpo epsilon=0.1

Named fields cover what the loop itself uses; `--grpo KEY=VALUE` sets any other field of TRL's `GRPOConfig`
unchanged (type-checked against TRL's own field types), so every TRL knob reaches the trainer.
"""

import argparse
import dataclasses
import json
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from rewards.chess_engine import parse_limit
from selfplay.domains.chess_positions import parse_position_mix


COMPLETION_TOKENS = {"chess": 8, "code": 256}  # a move; a short function
# GRPO's learning rate per domain: on chess after the warm start, 3e-4 and 1e-4 undid what the fine-tune taught and
# 3e-5 kept it (bench/learning.py); code trains from the base model at 3e-4
LEARNING_RATES = {"chess": 3e-5, "code": 3e-4}
# warm start before GRPO (bench/learning.py): chess, 1000 engine moves (the only stage that taught tactics); code,
# expert iteration on 300 tasks (+13 points of pass@1 before GRPO adds its own)
WARM_START = {"chess": 1000, "code": 300}
# sampling temperature per domain: the base model passes 17% of its code samples at 0.6 and 5% at 1.0 (greedy: 21%)
TEMPERATURES = {"chess": 0.8, "code": 0.6}
# --preset NAME: settings that replace the defaults (flags given on the command line still win). long (chess): the
# default recipe with four times the fine-tune, twice the iterations and a 20-game match at the end, <= 2 h on 2 cores
PRESETS = {"long": {"chess": {"warm_start": 4000, "steps": 40, "games": 20}}}


TRACKERS = ("tensorboard", "wandb")  # the `pip install .[trackers]` ones TRL reports to


class ConfigError(ValueError):
    """A flag or setting is malformed; the message names it."""


@dataclass
class LoopConfig:
    domain: str = "chess"
    """task domain: chess or code"""
    model: str = "SmolLM2-135M-Instruct"
    """HF model directory or hub id (default: the built-in SmolLM2-135M-Instruct)"""
    run: str | None = None
    """run name; the run goes to <runs-dir>/<run> (default: <domain>__<model>__<seed>__<time>)"""
    resume: str | None = None
    """continue the stopped run RUN (a name or unique prefix in --runs-dir) from its last complete iteration, with
    its own settings (the other flags are not used)"""
    runs_dir: str = "runs"
    """where run directories are created"""
    preset: str | None = None
    """named settings that replace the defaults, flags given still win: long (chess: warm start 4000, 40 iterations,
    20 games against Stockfish UCI_Elo 1350 at the end; about 2 h on a 2-core CPU)"""
    steps: int | None = None
    """GRPO iterations (generate, score, update); unset: 20, or the preset's"""
    seed: int = 0
    """seed for training positions, sampling and initialisation"""
    prompts_per_step: int = 4
    """distinct prompts per iteration; each gets num_generations samples"""
    num_generations: int = 8
    """GRPO group size (TRL num_generations)"""
    micro_batch_size: int = 8
    """sequences per forward/backward pass; an iteration's prompts_per_step x num_generations must divide by it.
    A multiple of num_generations lets a group's samples share one pass over their prompt (selfplay.shared_prefix)"""
    max_completion_length: int | None = None
    """max new tokens per completion (TRL max_completion_length); unset: the domain's, 8 for chess, 256 for code"""
    temperature: float | None = None
    """sampling temperature, for vLLM and for the trainer's logprobs (TRL temperature); unset: the domain's, 0.8 for
    chess, 0.6 for code"""
    learning_rate: float | None = None
    """AdamW learning rate (TRL learning_rate); unset: the domain's, 3e-5 for chess, 3e-4 for code"""
    beta: float = 0.0
    """KL coefficient against the reference policy (TRL beta)"""
    loss_type: str = "dapo"
    """TRL loss_type: grpo, dr_grpo, dapo, bnpo, ..."""
    scale_rewards: str = "group"
    """TRL scale_rewards: group, batch or none"""
    full_finetune: bool = False
    """train every weight instead of a LoRA adapter; TRL then generates and syncs weights itself (its colocated
    vLLM on CUDA; HF generate on CPU, where vLLM cannot reload full weights)"""
    lora_rank: int = 16
    """LoRA rank (PEFT r)"""
    lora_alpha: int = 32
    """LoRA alpha (PEFT lora_alpha)"""
    prompt_style: str = "san"
    """chess prompt: san (FEN, legal moves in SAN shuffled per position, one-move answers) or uci (FEN, board,
    sorted UCI list, answers run to the token budget: the first prompt)"""
    warm_start: int | None = None
    """fine-tune first, then GRPO from the fine-tuned model (runs/<run>/warm/model). chess: on Stockfish's best move
    in this many training positions (selfplay sft --targets engine); code: on the policy's own answers that pass
    every test, sampled for this many training tasks (expert iteration). 0: GRPO from the model as it is; unset:
    1000 for chess, 300 for code"""
    train_reward: str = "engine"
    """chess reward the policy trains on: engine (expected score against the best move) or rank (rank of the move
    among the legal moves by engine score); the other rewards are logged"""
    positions: str = "random:3,mate_in_one:1"
    """training positions: random (seeded playouts), mate_in_one (generated), a file (.epd .pgn .fen .txt, Lichess
    puzzle .csv), or a weighted mix like puzzles.csv:3,random:1"""
    selfplay_games: int = 4
    """games per self-play round (one round per iteration) when the positions mix has selfplay"""
    selfplay_plies: int = 60
    """plies after which a self-play game stops"""
    selfplay_opponent: str = "self"
    """self-play opponent: self, or a Stockfish UCI_Elo level (1350..2850 for Stockfish 15)"""
    skip_bad: bool = False
    """skip (and count) malformed lines of position files instead of stopping at the first"""
    train_positions: int = 1000
    """size of the training prompt pool"""
    eval_positions: int = 100
    """size of each held-out evaluation set, scored before and after training (0 skips evaluation)"""
    eval_file: str | None = None
    """held-out position sets, comma-separated: files (the first eval_positions of each), random (playouts) or
    mate_in_one (generated), each summarised on its own; unset: random,mate_in_one"""
    eval_every: int = 0
    """also evaluate every N iterations, into eval.jsonl (0: only before and after)"""
    games: int | None = None
    """chess: games against Stockfish at --elo after training, the policy alternating colours (selfplay eval chess
    --games); unset: 0, or the preset's"""
    elo: int = 1350
    """chess: the UCI_Elo of the Stockfish that --games plays"""
    tasks: str = "generated"
    """code training tasks: generated (seeded families with hidden tests) or a JSONL file in the HumanEval or MBPP
    format (.jsonl or .jsonl.gz)"""
    train_tasks: int = 1000
    """size of the code training task pool"""
    eval_tasks: int = 200
    """held-out generated code tasks, scored (pass@1, greedy) before and after training. The 95% interval of a paired
    pass@1 change near 20% is about +-6 points at 200 tasks (+-8 at 100): a 10-point change lies outside it"""
    eval_humaneval: int = 164
    """HumanEval problems (the first N of 164) also scored before and after training (0 skips them)"""
    sandbox: str = "auto"
    """where code rewards run untrusted code: auto (bwrap, else docker), bwrap or docker"""
    engine_limit: str = "depth=8"
    """Stockfish search limit for rewards: depth=N, nodes=N or time=SECONDS"""
    engine_workers: int = 0
    """Stockfish processes scoring in parallel (0: one per core)"""
    engine_cache: str | None = None
    """SQLite file that keeps engine evaluations across runs (unset: in memory only)"""
    report_to: str = "none"
    """also report the metrics to these trackers, comma-separated (TRL report_to): tensorboard (into
    runs/<run>/tensorboard), wandb (offline into runs/<run>/wandb unless WANDB_MODE or WANDB_API_KEY is set)"""
    grpo: list[str] = field(default_factory=list)
    """extra TRL GRPOConfig fields as KEY=VALUE (repeatable)"""
    reward: list[str] = field(default_factory=list)
    """a reward function of your own, added to the domain's (repeatable): module:function[=weight] or the name of an
    installed `selfplay.rewards` entry point; TRL's signature f(prompts, completions, **columns) -> list[float|None];
    weight 0 logs it only (see selfplay rewards check)"""
    rewards_only: bool = False
    """train on the --reward functions only; the domain's rewards are still logged and evaluated"""

    def __post_init__(self):
        for name, value in PRESETS.get(self.preset, {}).get(self.domain, {}).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.steps is None:
            self.steps = 20
        if self.games is None:
            self.games = 0
        if self.max_completion_length is None:
            self.max_completion_length = COMPLETION_TOKENS.get(self.domain, 8)
        if self.learning_rate is None:
            self.learning_rate = LEARNING_RATES.get(self.domain, 3e-4)
        if self.warm_start is None:
            self.warm_start = WARM_START.get(self.domain, 0)
        if self.temperature is None:
            self.temperature = TEMPERATURES.get(self.domain, 0.8)

    def validate(self) -> None:
        if self.preset is not None and self.domain not in PRESETS.get(self.preset, {}):
            known = ", ".join(f"{name} ({', '.join(domains)})" for name, domains in PRESETS.items())
            raise ConfigError(f"--preset {self.preset!r} for --domain {self.domain}: the presets are {known}")
        if self.games and self.domain != "chess":
            raise ConfigError(f"--games: matches against Stockfish are chess only, not --domain {self.domain}")
        for name in (
            "steps", "prompts_per_step", "num_generations", "micro_batch_size", "max_completion_length", "lora_rank",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("games", "engine_workers", "eval_every", "eval_positions", "train_positions", "train_tasks", "eval_tasks",
                     "eval_humaneval"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        check_engine_limit("--engine-limit", self.engine_limit)
        try:
            sources = [source for source, _ in parse_position_mix(self.positions)]
        except ValueError as error:
            raise ConfigError(f"--positions: {error}") from None
        if "selfplay" in sources and self.full_finetune:
            raise ConfigError("--positions selfplay needs the LoRA path (vLLM plays the games); drop --full-finetune")
        if self.selfplay_opponent != "self" and not self.selfplay_opponent.isdigit():
            raise ConfigError(f"--selfplay-opponent {self.selfplay_opponent!r}: expected self or a UCI_Elo like 1350")
        if (self.prompts_per_step * self.num_generations) % self.micro_batch_size:
            raise ConfigError("--micro-batch-size must divide --prompts-per-step x --num-generations")
        if self.prompt_style not in ("san", "uci"):
            raise ConfigError(f"--prompt-style {self.prompt_style!r}: choose san or uci")
        if self.warm_start < 0:
            raise ConfigError(f"--warm-start must be 0 or more, got {self.warm_start}")
        if self.train_reward not in ("engine", "rank"):
            raise ConfigError(f"--train-reward {self.train_reward!r}: choose engine or rank")
        if self.sandbox not in ("auto", "bwrap", "docker"):
            raise ConfigError(f"--sandbox {self.sandbox!r}: choose auto, bwrap or docker")
        if self.temperature < 0:
            raise ConfigError(f"--temperature must be >= 0, got {self.temperature}")
        for tracker in self.trackers():
            if tracker not in TRACKERS:
                raise ConfigError(f"--report-to {tracker!r}: choose none or any of {', '.join(TRACKERS)}")
        if self.rewards_only and not self.reward:
            raise ConfigError("--rewards-only needs at least one --reward module:function")
        grpo_overrides(self.grpo)  # fail at parse time, not after vLLM has started

    def trackers(self) -> list[str]:
        return [t.strip() for t in self.report_to.split(",") if t.strip() and t.strip() != "none"]

    def run_name(self) -> str:
        model = Path(self.model.rstrip("/")).name or self.model
        return self.run or f"{self.domain}__{model}__{self.seed}__{time.strftime('%Y%m%d-%H%M%S')}"


def _field_type(tp):
    """The scalar type argparse converts to: `str | None` -> str, `list[str]` -> str."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is list:
        tp = typing.get_args(tp)[0]
    return tp


def field_docs(cls) -> dict[str, str]:
    """The docstring under each dataclass field (cleanrl style), read from the source."""
    import ast
    import inspect

    docs, body = {}, ast.parse(inspect.getsource(cls)).body[0].body
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = nxt.value.value
    return docs


def add_config_arguments(parser: argparse.ArgumentParser, cls=LoopConfig) -> None:
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{docs.get(f.name, '')} (default: {default})".replace("%", "%%")  # argparse formats help with %
        if hints[f.name] is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif typing.get_origin(hints[f.name]) is list:
            metavar = {"grpo": "KEY=VALUE", "reward": "MODULE:FUNCTION[=WEIGHT]"}.get(f.name, f.name.upper())
            parser.add_argument(flag, action="append", default=[], metavar=metavar, help=help_text)
        else:
            parser.add_argument(flag, type=_field_type(hints[f.name]), default=default, help=help_text)


def config_from_args(args: argparse.Namespace, cls=LoopConfig):
    """The config dataclass from parsed flags, checked by its `validate()` (ConfigError naming the flag)."""
    config = cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
    config.validate()
    return config


def check_engine_limit(flag: str, text: str) -> None:
    try:
        parse_limit(text)
    except ValueError as error:
        raise ConfigError(f"{flag}: {error}") from None


def grpo_overrides(pairs: list[str]) -> dict:
    """Parse `--grpo KEY=VALUE` pairs into GRPOConfig keyword arguments, typed by TRL's own field types."""
    from trl import GRPOConfig

    fields = {f.name: f for f in dataclasses.fields(GRPOConfig)}
    hints = typing.get_type_hints(GRPOConfig)
    overrides = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ConfigError(f"--grpo {pair!r}: expected KEY=VALUE")
        if key not in fields:
            raise ConfigError(f"--grpo {key}: TRL's GRPOConfig has no field {key!r}")
        overrides[key] = _parse_value(key, raw, hints[key])
    return overrides


def _parse_value(key: str, raw: str, tp):
    scalar = _field_type(tp)
    if raw.lower() == "none" and type(None) in typing.get_args(tp):
        return None
    try:
        if scalar is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1")
        if scalar in (int, float, str):
            return scalar(raw)
        return json.loads(raw)  # lists and dicts
    except ValueError:
        raise ConfigError(f"--grpo {key}={raw!r}: not a valid {getattr(scalar, '__name__', scalar)}") from None
