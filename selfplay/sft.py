"""`selfplay sft`: a supervised warm start before GRPO, through TRL's SFTTrainer.

    selfplay sft --targets engine --examples 512 --run warm      # imitate Stockfish's best move
    selfplay sft --targets samples --examples 512 --run warm     # the policy's own best samples (expert iteration)
    selfplay loop --domain chess --model runs/warm/model         # GRPO from the warm-started model

The prompts are chess training positions (`--positions`, as in the loop; the loop's held-out set is excluded). The
answer to learn is either the engine's best move in UCI, or, for `samples`, the best of `samples_per_prompt` answers
the policy itself samples through vLLM, kept only when its engine reward reaches `min_reward` (rejection sampling).
TRL trains a LoRA adapter on the completion tokens only; it is merged into the weights, and runs/<run>/model is a
plain HF model directory that `--model` accepts.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

import chess
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import PrinterCallback, TrainerCallback

from rewards.chess import ChessRewards
from selfplay.config import ConfigError, ReadsDomainSettings, check_engine_limit
from selfplay.domains import chess as chess_domain
from selfplay.model import resolve_model
from selfplay.runlog import create_run_dir, write_json
from selfplay.terminal import output_console


@dataclass
class SFTConfig(ReadsDomainSettings):
    model: str = "SmolLM2-135M-Instruct"
    """HF model directory or hub id to start from (default: the built-in SmolLM2-135M-Instruct)"""
    targets: str = "engine"
    """what to imitate: engine (Stockfish's best move) or samples (the policy's own best sampled answers)"""
    positions: str = "random"
    """training positions, as the loop's --positions (selfplay excepted)"""
    prompt_style: str = "moves"
    """the chess prompt and answer notation, as the loop's --prompt-style: moves, san or uci"""
    skip_bad: bool = False
    """skip (and count) malformed lines of position files"""
    examples: int = 512
    """prompts to build examples from (samples: fewer examples remain after filtering)"""
    samples_per_prompt: int = 8
    """samples: answers sampled per prompt at temperature 1"""
    min_reward: float = 0.9
    """samples: keep a prompt's best answer only when its engine reward reaches this"""
    epochs: float = 1.0
    """passes over the examples"""
    learning_rate: float = 2e-4
    """AdamW learning rate"""
    batch_size: int = 8
    """examples per optimizer step (in micro-batches of 2)"""
    lora_rank: int = 16
    """LoRA rank (merged into the weights at the end)"""
    engine_limit: str = "depth=8"
    """Stockfish search limit: depth=N, nodes=N or time=SECONDS"""
    engine_workers: int = 0
    """Stockfish processes in parallel (0: one per core, or one per --engine)"""
    engine: list[str] = field(default_factory=list)
    """a UCI engine command instead of the local Stockfish, repeatable, as the loop's --engine"""
    engine_cache: str | None = None
    """SQLite file that keeps engine evaluations across runs"""
    run: str | None = None
    """output directory name under runs_dir (default: sft__<targets>__<time>)"""
    runs_dir: str = "runs"
    """where output directories are created"""
    seed: int = 0
    """seed for positions and sampling"""

    settings: object = None
    """(not a flag) the chess domain's settings that the fine-tune's positions and engines are made from"""
    domain = "chess"

    def __post_init__(self):
        self.settings = chess_domain.ChessSettings(
            positions=self.positions, train_positions=self.examples, prompt_style=self.prompt_style,
            engine_limit=self.engine_limit, engine_workers=self.engine_workers, engine=self.engine,
            engine_cache=self.engine_cache)

    def validate(self) -> None:
        if self.targets not in ("engine", "samples"):
            raise ConfigError(f"--targets {self.targets!r}: choose engine or samples")
        chess_domain.check_prompt_style(self.prompt_style)
        if "selfplay" in self.positions:
            raise ConfigError("--positions: selfplay positions come from a running loop; use random or a file here")
        for name in ("examples", "samples_per_prompt", "batch_size", "lora_rank"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.batch_size % 2:
            raise ConfigError(f"--batch-size must be even (micro-batches of 2), got {self.batch_size}")
        if self.epochs <= 0:
            raise ConfigError(f"--epochs must be positive, got {self.epochs}")
        check_engine_limit("--engine-limit", self.engine_limit)


def best_sampled_answers(model_path: str, rows: list[dict], config: SFTConfig, tokenizer,
                         engine_reward) -> list[str | None]:
    """Per row, the policy's best of `samples_per_prompt` sampled answers, or None when none reaches min_reward."""
    from selfplay.policy import VLLMPolicy
    from selfplay.train import encode_prompt

    policy = VLLMPolicy(model_path, lora_rank=None, seed=config.seed, answer_tokens=8)
    try:
        groups = policy.generate([encode_prompt(tokenizer, row["prompt"]) for row in rows],
                                 n=config.samples_per_prompt, max_tokens=8, temperature=1.0,
                                 stop=chess_domain.stop_strings(config))
    finally:
        policy.close()
    answers = []
    for row, group in zip(rows, groups):
        texts = [c.text.strip() for c in group]
        rewards = engine_reward(None, texts, fen=[row["fen"]] * len(texts))
        best = max(range(len(texts)), key=lambda i: rewards[i])
        answers.append(texts[best] if rewards[best] >= config.min_reward else None)
    return answers


def run_sft(config: SFTConfig, console: Console | None = None, on_run_dir=None) -> dict:
    console = console or output_console()
    model_path = resolve_model(config.model)
    held_out = chess_domain.eval_rows(SFTConfig())  # the loop's default held-out sets: never trained on
    rows = chess_domain.train_rows(config, held_out)
    out = create_run_dir(config.runs_dir, config.run or f"sft__{config.targets}__{time.strftime('%Y%m%d-%H%M%S')}")
    if on_run_dir:
        on_run_dir(out)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    start = time.perf_counter()
    with ChessRewards(chess_domain.engine_pool(config)) as rewards:
        if config.targets == "engine":
            boards = [chess.Board(row["fen"]) for row in rows]
            in_san = chess_domain.answers_in_san(config.prompt_style)
            answers = [board.san(chess.Move.from_uci(move)) if in_san and move else move
                       for board, move in zip(boards, rewards.pool.best_moves(boards))]
        else:
            answers = best_sampled_answers(model_path, rows, config, tokenizer, rewards.engine_reward)
    examples = [{"prompt": row["prompt"], "completion": [{"role": "assistant", "content": answer}]}
                for row, answer in zip(rows, answers) if answer]
    if not examples:
        raise ConfigError(f"no example reached --min-reward {config.min_reward}: lower it or use --targets engine")
    targets_seconds = time.perf_counter() - start
    console.print(f"[bold]sft[/] {len(examples)} examples from {len(rows)} positions ({config.targets})")
    losses, train_seconds = fine_tune(model_path, examples, out, tokenizer, learning_rate=config.learning_rate,
                                      epochs=config.epochs, batch_size=config.batch_size, lora_rank=config.lora_rank,
                                      seed=config.seed, console=console)
    result = {"examples": len(examples), "positions": len(rows), "targets": config.targets,
              "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
              "targets_seconds": targets_seconds, "train_seconds": train_seconds, "model": str(out / "model")}
    write_json(out / "sft.json", result)
    loss = f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, " if losses else ""
    console.print(f"[bold]sft[/] done: {loss}{train_seconds / 60:.1f} min; the model is {result['model']}",
                  highlight=False)
    return result


def fine_tune(model_path: str, examples: list[dict], out: Path, tokenizer, *, learning_rate: float, epochs: float,
              batch_size: int, lora_rank: int, seed: int, console: Console | None = None,
              micro_batch: int = 2) -> tuple[list[float], float]:
    """TRL's SFTTrainer on prompt/completion `examples` (loss on the completion only), a LoRA adapter merged into the
    weights, saved with the tokenizer as out/model, its progress on `console`. Returns the logged losses and the
    training seconds. Micro-batches of 2: on CPU 1 is as fast, 8 slower (bench/sft_step.py)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from selfplay.precision import update_in_bfloat16
    from selfplay.trl_seam import cpu_lm_head

    if not torch.cuda.is_available():
        cpu_lm_head()  # the loss is on the answer's few tokens: ~1.5x a step (bench/sft_step.py)
    args = TRLSFTConfig(
        output_dir=str(out / "trainer"), num_train_epochs=epochs, learning_rate=learning_rate,
        per_device_train_batch_size=micro_batch, gradient_accumulation_steps=batch_size // micro_batch, logging_steps=1,
        save_strategy="no", report_to=[], seed=seed, use_cpu=not torch.cuda.is_available(),
        bf16=update_in_bfloat16(model_path),
        gradient_checkpointing=False, disable_tqdm=True,  # FineTuneProgress shows it
    )
    peft = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model_path, args=args, train_dataset=Dataset.from_list(examples),
                         processing_class=tokenizer, peft_config=peft,
                         callbacks=[FineTuneProgress(console or output_console())])
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; the progress above shows the loss
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    merged = trainer.model.merge_and_unload().to(torch.float32)
    merged.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    return [log["loss"] for log in trainer.state.log_history if "loss" in log], train_seconds


class FineTuneProgress(TrainerCallback):
    """The fine-tune's progress on our console: a bar with ETA and loss in a terminal; through a pipe, a line at every
    tenth of the steps."""

    def __init__(self, console: Console):
        self.console, self.progress, self.start = console, None, time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()
        if self.console.is_terminal:
            self.progress = Progress(TextColumn("[bold]sft"), MofNCompleteColumn(), BarColumn(), TimeElapsedColumn(),
                                     TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[loss]}"),
                                     console=self.console, redirect_stdout=False, redirect_stderr=False)  # theirs: log
            self.task = self.progress.add_task("sft", total=state.max_steps, loss="")
            self.progress.start()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        loss = f"loss {float(logs['loss']):.3f}"
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, loss=loss)
        elif state.global_step % max(1, state.max_steps // 10) == 0 or state.global_step == state.max_steps:
            minutes = (time.perf_counter() - self.start) / 60
            self.console.print(f"sft step {state.global_step}/{state.max_steps}  {loss}  {minutes:.1f} min",
                               highlight=False)
            self.console.file.flush()

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
