"""The loop's settings: a dataclass with a field per flag, and the domain's own settings dataclass beside it
(`config.settings`, its fields read through `config` too), parsed from the command line and saved in the run dir.

    selfplay loop --domain chess --steps 20 --grpo loss_type=grpo --grpo epsilon=0.1
    make_config(domain="code", steps=5, eval_tasks=10)   # the loop's and the domain's settings by name

Named fields cover what the loop itself uses; `--grpo KEY=VALUE` sets any other field of TRL's `GRPOConfig`
unchanged (type-checked against TRL's own field types), so every TRL knob reaches the trainer. A setting left unset
(None) takes the preset's value (`--preset`), else the domain's default (`Domain.defaults`), else the loop's.
"""

import argparse
import dataclasses
import json
import math
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from rewards.chess_engine import parse_limit

TRACKERS = ("tensorboard", "wandb")  # the `pip install .[trackers]` ones TRL reports to


class ConfigError(ValueError):
    """A flag or setting is malformed; the message names it."""


class ReadsDomainSettings:
    """A command's settings dataclass (the loop's, eval's, sft's) with a domain's settings dataclass beside its own
    fields (`config.settings`), read through it too: `config.engine_limit` is `config.settings.engine_limit`."""

    def __getattr__(self, name: str):
        settings = self.__dict__.get("settings")
        if settings is not None and name in {f.name for f in dataclasses.fields(settings)}:
            return getattr(settings, name)
        raise AttributeError(f"{type(self).__name__} (domain {self.__dict__.get('domain')}) has no setting {name!r}")

    def as_dict(self) -> dict:
        """Every setting by name, the command's and the domain's (what config.json holds)."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "settings"}
        return {**own, **dataclasses.asdict(self.settings)}


@dataclass
class LoopConfig(ReadsDomainSettings):
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
    micro_batch_size: int | None = None
    """sequences per forward/backward pass; an iteration's prompts_per_step x num_generations must divide by it.
    A multiple of num_generations lets a group's samples share one pass over their prompt (selfplay.shared_prefix).
    Unset: the domain's (16 for chess, 8 for code), or its greatest common divisor with an iteration's sequences"""
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
    warm_start: int | None = None
    """fine-tune first, then GRPO from the fine-tuned model (runs/<run>/warm/model). chess: on Stockfish's best move
    in this many training positions (selfplay sft --targets engine); code: on the policy's own answers that pass
    every test, sampled for this many training tasks (expert iteration). 0: GRPO from the model as it is; unset:
    1000 for chess, 300 for code"""
    skip_bad: bool = False
    """skip (and count) malformed lines of position files instead of stopping at the first"""
    eval_every: int = 0
    """also evaluate every N iterations, into eval.jsonl (0: only before and after)"""
    keep_adapters: int = 2
    """adapter versions kept in runs/<run>/adapters besides the final one (0: every one, for selfplay eval
    --checkpoints; a LoRA adapter of the default model is ~20 MB)"""
    vllm_server: str | None = None
    """generate on vLLM's own OpenAI-compatible server instead of in this process: auto (start one, its output in
    runs/<run>/vllm-server.log) or the URL of one you started (`vllm serve MODEL --enable-lora --max-lora-rank R
    --logprobs-mode processed_logprobs` with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True; --model is the same weights;
    the adapters directory must be readable there). With --full-finetune: the URL of `trl vllm-serve` (CUDA)"""
    num_processes: int = 1
    """training processes: above 1, the iterations run under `accelerate launch` (DDP and friends: each process
    samples its share of the prompts on the vLLM server, --vllm-server or one the loop starts, and the gradients are
    averaged); the evaluations, warm start and games stay in this process. GPUs: one per process"""
    accelerate_config: str = "ddp"
    """accelerate config for --num-processes: ddp, zero2, fsdp (configs/accelerate/) or a YAML file of yours"""
    overlap_rewards: str = "auto"
    """score each group while the rest of the batch generates: on, off, or auto (on where vLLM generates on a GPU;
    on a CPU box they share the cores: bench/reward_overlap.py measured 1.03x for chess and 0.95x for code there)"""
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

    settings: object = None
    """(not a flag) the domain's settings dataclass; default: the domain's defaults"""

    def __post_init__(self):
        from selfplay.domains import get_domain

        domain = get_domain(self.domain)
        if self.settings is None:
            self.settings = domain.Settings()
        if self.preset is not None and self.preset not in domain.presets:
            known = ", ".join(domain.presets) or "none"
            raise ConfigError(f"--preset {self.preset!r}: the {domain.name} domain's presets are {known}")
        micro_batch_given = self.micro_batch_size is not None
        for values in (domain.presets.get(self.preset, {}), domain.defaults, LOOP_DEFAULTS):
            for name, value in values.items():
                holder = self if name in LOOP_FIELDS else self.settings
                if getattr(holder, name) is None:
                    setattr(holder, name, value)
        if not micro_batch_given and self.num_processes > 0:  # a default that always divides the iteration
            rows = self.prompts_per_step * self.num_generations // self.num_processes
            self.micro_batch_size = math.gcd(self.micro_batch_size, rows)

    def validate(self) -> None:
        for name in (
            "steps", "num_processes", "prompts_per_step", "num_generations", "micro_batch_size",
            "max_completion_length", "lora_rank",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("eval_every", "keep_adapters"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        if (self.prompts_per_step * self.num_generations) % (self.micro_batch_size * self.num_processes):
            raise ConfigError("--micro-batch-size x --num-processes must divide --prompts-per-step x "
                              "--num-generations")
        if self.warm_start < 0:
            raise ConfigError(f"--warm-start must be 0 or more, got {self.warm_start}")
        if self.temperature < 0:
            raise ConfigError(f"--temperature must be >= 0, got {self.temperature}")
        for tracker in self.trackers():
            if tracker not in TRACKERS:
                raise ConfigError(f"--report-to {tracker!r}: choose none or any of {', '.join(TRACKERS)}")
        if self.overlap_rewards not in ("auto", "on", "off"):
            raise ConfigError(f"--overlap-rewards {self.overlap_rewards!r}: choose auto, on or off")
        if self.rewards_only and not self.reward:
            raise ConfigError("--rewards-only needs at least one --reward module:function")
        if self.vllm_server not in (None, "auto") and not self.vllm_server.startswith(("http://", "https://")):
            raise ConfigError(f"--vllm-server {self.vllm_server!r}: give auto or a URL (http://host:port)")
        if self.vllm_server and self.full_finetune and (self.vllm_server == "auto" or not torch_cuda()):
            raise ConfigError("--full-finetune with --vllm-server: full weights reach a server through TRL's "
                              "`trl vllm-serve` and its NCCL weight sync, on CUDA; start it and pass its URL")
        if self.vllm_server not in (None, "auto") and self.warm_start:
            raise ConfigError(f"--vllm-server {self.vllm_server}: a server you started serves fixed base weights, "
                              "and the warm start makes new ones. Fine-tune first (selfplay sft), serve that model, "
                              "and run with --model <it> --warm-start 0; or use --vllm-server auto")
        if self.num_processes > 1:
            self.check_distributed()
        grpo_overrides(self.grpo)  # fail at parse time, not after vLLM has started
        if hasattr(self.settings, "validate"):
            self.settings.validate(self)

    def check_distributed(self) -> None:
        from selfplay.distributed import accelerate_config_file

        if self.full_finetune:
            raise ConfigError("--num-processes: several trainer processes train a LoRA adapter (drop --full-finetune)")
        if self.eval_every:
            raise ConfigError("--eval-every: with --num-processes the held-out sets are scored before and after only")
        if "selfplay" in str(getattr(self.settings, "positions", "")):
            raise ConfigError("--positions selfplay plays its games in one process: use --num-processes 1")
        accelerate_config_file(self.accelerate_config)  # a missing file stops here

    def policy_server(self) -> str | None:
        """Where the policy generates: None (in this process), auto or a URL; several trainer processes share one."""
        return self.vllm_server or ("auto" if self.num_processes > 1 else None)

    def overlaps_rewards(self) -> bool:
        """Whether groups are scored while the rest of the batch generates (`overlap_rewards`; auto: on CUDA)."""
        return self.overlap_rewards == "on" or (self.overlap_rewards == "auto" and torch_cuda())

    def trackers(self) -> list[str]:
        return [t.strip() for t in self.report_to.split(",") if t.strip() and t.strip() != "none"]

    def run_name(self) -> str:
        model = Path(self.model.rstrip("/")).name or self.model
        return self.run or f"{self.domain}__{model}__{self.seed}__{time.strftime('%Y%m%d-%H%M%S')}"


LOOP_FIELDS = {f.name for f in dataclasses.fields(LoopConfig)}
LOOP_DEFAULTS = {"steps": 20, "micro_batch_size": 8, "max_completion_length": 256, "learning_rate": 3e-4,
                 "warm_start": 0, "temperature": 0.8}


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def make_config(**settings) -> LoopConfig:
    """A LoopConfig from settings by name, the loop's and the domain's mixed (as config.json and the flags hold
    them); ConfigError naming a setting that neither has."""
    return build_config(LoopConfig, settings)


def build_config(cls, settings: dict):
    """A `ReadsDomainSettings` dataclass from settings by name, its own and its domain's mixed."""
    from selfplay.domains import get_domain

    domain = get_domain(settings.get("domain", "chess"))
    own = {f.name for f in dataclasses.fields(cls)} - {"settings"}
    domain_fields = {f.name for f in dataclasses.fields(domain.Settings)}
    unknown = sorted(set(settings) - own - domain_fields)
    if unknown:
        command = cls.__name__.removesuffix("Config").lower()
        raise ConfigError(f"{', '.join(unknown)}: not a setting of the {command} or of the {domain.name} domain")
    return cls(**{k: v for k, v in settings.items() if k in own},
               settings=domain.Settings(**{k: v for k, v in settings.items() if k in domain_fields}))


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


def add_config_arguments(parser: argparse.ArgumentParser, cls=LoopConfig, skip: tuple[str, ...] = ()) -> None:
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "settings" or f.name in skip:  # settings: the domain's dataclass, whose fields are flags too
            continue
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
    """The config dataclass from parsed flags (with a domain's settings, its flags too), checked by its `validate()`
    (ConfigError naming the flag)."""
    if any(f.name == "settings" for f in dataclasses.fields(cls)):
        config = build_config(cls, {k: v for k, v in vars(args).items() if k not in ("command", "verbose")})
    else:
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
