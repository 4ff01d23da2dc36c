"""The self-improvement loop, top to bottom: config -> model -> policy -> eval -> (generate, score, update)* -> eval.

    selfplay loop --domain chess --steps 20        # or: make loop DOMAIN=chess STEPS=20 (DOMAIN=code: Python)

1. the policy model is resolved (the built-in SmolLM2-135M-Instruct is built on first use);
2. vLLM serves it; the held-out set is answered greedily and scored ("before");
3. TRL's GRPOTrainer runs `steps` iterations: vLLM samples a group per prompt, the domain's reward functions score
   them, TRL updates the LoRA adapter, and the new adapter is hot-loaded into vLLM;
4. the held-out set is scored again ("after"; and every `eval_every` iterations on the way, into eval.jsonl);
   everything lands in runs/<run-id>/ (see selfplay.runlog).
"""

import contextlib
import gc
import json
import logging
import os
import shutil
import time

from rich.console import Console
from transformers import TrainerCallback

from selfplay import allocator, step_time
from selfplay.config import ConfigError, LoopConfig
from selfplay.dashboard import Dashboard
from selfplay.terminal import cpu_name, output_console
from selfplay.domains import get_domain
from selfplay.evaluate import compare, eval_table, evaluate
from selfplay.interrupts import StopAfterIteration
from selfplay.stats import describe_change
from selfplay.model import resolve_model
from selfplay.plugins import CHECK_ROWS, load_rewards, plug_in
from selfplay.resume import (checkpoint_iteration, earlier_evaluations, latest_checkpoint, saved_config,
                             truncate_logs)
from selfplay.runlog import (RunLogger, append_jsonl, create_run_dir, free_run_dir, read_status, write_json,
                             write_status)
from selfplay.runs import resolve as resolve_run

log = logging.getLogger(__name__)


def run_loop(config: LoopConfig, console: Console | None = None, on_run_dir=None) -> dict:
    """Run the loop, or with `config.resume` continue that run; `on_run_dir(path)` is called once the run directory
    exists (the CLI moves its log there)."""
    console = console or output_console()
    checkpoint, resuming = None, bool(config.resume)
    if resuming:
        run_dir = resolve_run(config.runs_dir, config.resume)
        config = saved_config(run_dir)
        if read_status(run_dir).get("status") == "finished":
            console.print(f"{run_dir.name} has finished: nothing to resume (selfplay runs show {run_dir.name})")
            return json.loads((run_dir / "eval.json").read_text()) if (run_dir / "eval.json").exists() else {}
    else:
        run_dir = free_run_dir(config.runs_dir, config.run_name())  # a taken name stops here, before any rows
    domain = get_domain(config.domain)
    model_path = resolve_model(config.model)
    # a bad --reward stops here, tried on a few of the domain's rows before its own rows are made (a minute for chess)
    plugged = load_rewards(config.reward, config.rewards_only,
                           domain.sample_rows(config, CHECK_ROWS) if config.reward else [])
    with console.status(f"making the {domain.name} domain's held-out and training rows"):  # shown in a terminal
        eval_rows = domain.eval_rows(config)
        rows = domain.train_rows(config, eval_rows)  # a bad position or task file stops here: no run dir, no vLLM
    if config.full_finetune and domain.tools(config):
        raise ConfigError(f"--full-finetune: the {domain.name} domain's tools are answered by selfplay's vLLM "
                          "rollout, which serves LoRA adapters; train a LoRA adapter (drop --full-finetune)")
    if resuming:
        checkpoint = latest_checkpoint(run_dir)
        truncate_logs(run_dir, checkpoint_iteration(checkpoint))
    else:
        run_dir = create_run_dir(config.runs_dir, run_dir.name)
        settings = {**config.as_dict(), "run": run_dir.name, "model_path": model_path}
        write_json(run_dir / "config.json", settings)
    if on_run_dir:
        on_run_dir(run_dir)
    write_status(run_dir, "running", started=time.time(), steps=config.steps)
    try:
        results = _run(config, console, domain, model_path, eval_rows, rows, run_dir, checkpoint, resuming, plugged)
    except KeyboardInterrupt:
        write_status(run_dir, "interrupted", ended=time.time())
        console.print(f"[bold]interrupted[/]: selfplay loop --resume {run_dir.name} continues it")
        raise
    except BaseException as error:
        write_status(run_dir, "crashed", ended=time.time(), error=f"{type(error).__name__}: {error}")
        raise
    write_status(run_dir, "finished", ended=time.time())
    console.print(f"[bold]run[/] {run_dir}  (selfplay runs show {run_dir.name})")
    return results


def _run(config: LoopConfig, console: Console, domain, model_path: str, eval_rows: list, rows: list, run_dir,
         checkpoint, resuming: bool, plugged: list) -> dict:
    import torch
    from transformers import AutoTokenizer

    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rewards = domain.rewards(config)
    reward_funcs, reward_weights = plug_in(plugged, config.rewards_only, rewards.funcs, rewards.weights,
                                           run_dir / "reward_failure.jsonl")
    plugged_in = ", ".join(f"{p.name} x{p.weight:g}" for p in plugged)
    print_header(console, config, run_dir, model_path,
                 domain.describe(config, rewards) + (f"; plugged in: {plugged_in}" if plugged else ""))
    lora = not config.full_finetune
    policy = None
    try:
        policy = start_policy(config, model_path, lora, run_dir)

        def run_eval(label: str) -> dict:
            result = evaluate(policy, tokenizer, eval_rows, reward_funcs, max_tokens=config.max_completion_length,
                              stop=domain.stop_strings(config), tools=domain.tools(config),
                              references=lambda rows, scores: domain.eval_references(rows, scores, rewards))
            append_jsonl(run_dir / "eval.jsonl", [{"label": label, **result}])
            if dashboard is not None:
                dashboard.evaluated(label, result.get(next(iter(domain.EVAL_METRICS))))
            if label == "before":
                console.print(eval_table(f"held-out {label} (95% intervals)", domain.EVAL_METRICS, result))
            elif label != "after":  # the after table follows
                change = compare(eval_rows, results["before"], result) if "before" in results else {}
                if label == "fine-tuned":
                    results["fine_tune_change"] = change
                console.print(f"[bold]eval {label}[/] {summary(result, change, domain.EVAL_METRICS)}",
                              highlight=False)
            return result

        results, dashboard = earlier_evaluations(run_dir), None  # a resumed run does not repeat these
        if eval_rows and "before" not in results:
            results["before"] = run_eval("before")
        warm_model = run_dir / "warm" / "model"
        if config.warm_start and "fine-tuned" in results and (warm_model / "config.json").exists():
            model_path = str(warm_model)  # fine-tuned before the run stopped
            policy.close()
            policy = start_policy(config, model_path, lora, run_dir)
        elif config.warm_start:  # fine-tune first (the domain's supervised targets), then GRPO from that model
            shutil.rmtree(run_dir / "warm", ignore_errors=True)  # a fine-tune cut short starts over
            model_path = domain.warm_start(config, model_path, run_dir, rewards, console, policy=policy,
                                           tokenizer=tokenizer, rows=rows)
            release_memory()  # the fine-tune's trainer: before vLLM and the GRPO trainer start beside what it left
            policy.close()
            policy = start_policy(config, model_path, lora, run_dir)
            if eval_rows:
                results["fine-tuned"] = run_eval("fine-tuned")
        done = checkpoint_iteration(checkpoint)
        if resuming:
            console.print(f"[bold]resume[/] from iteration {done} of {config.steps}" +
                          (f" ({checkpoint})" if checkpoint else ": no iteration was saved, they start over"))
        if checkpoint is not None:
            if lora:
                policy.load_adapter(str(checkpoint), done)
        if not lora:  # full weights: TRL generates and syncs itself (HF generate on CPU, its colocated vLLM on CUDA)
            policy.close()

        if config.num_processes > 1:  # the iterations in trainer processes under accelerate, on the same server
            from selfplay.distributed import launch

            dashboard = new_dashboard(config, domain, reward_funcs, reward_weights, checkpoint, console, plugged)
            launch(config, run_dir, model_path, policy.url, checkpoint, dashboard)
            policy.follow(str(run_dir / "adapters" / "final"), config.steps)  # rank 0 made the server serve it
        else:
            dashboard = new_dashboard(config, domain, reward_funcs, reward_weights, checkpoint, console, plugged)
            train_iterations(config, domain, model_path, run_dir, policy if lora else None, tokenizer, reward_funcs,
                             reward_weights, rows, eval_rows, checkpoint, dashboard, run_eval)
            release_memory()  # the trainer's: before the evaluation (and vLLM loading the saved weights)
            if not lora:
                if eval_rows or domain.plays_after_training(config):
                    policy = start_policy(config, str(run_dir / "final"), False, run_dir)
                    policy.version = config.steps

        if eval_rows:
            results["after"] = run_eval("after")
            results["change"] = compare(eval_rows, results["before"], results["after"])
            console.print(eval_table("held-out before -> after (95% intervals; change paired over the same rows)",
                                     domain.EVAL_METRICS, results["after"], results["before"], results["change"]))
        if domain.plays_after_training(config):  # chess: games against Stockfish
            results |= domain.after_training(config, policy, tokenizer, run_dir, console)
        if eval_rows or domain.plays_after_training(config):
            write_json(run_dir / "eval.json", results)
        return results
    finally:
        if policy is not None:
            policy.close()
        rewards.close()


def release_memory() -> None:
    """Free what a finished trainer held: its reference cycles now, and the pages the allocator keeps after a free
    (they stay in the process's resident set otherwise)."""
    gc.collect()
    allocator.release_free_memory()


def start_policy(config: LoopConfig, model_path: str, lora: bool, run_dir):
    """The policy the loop generates with: vLLM in this process, or its server (--vllm-server: auto or a URL; auto
    with --num-processes).
    A full fine-tune's policy is in-process: TRL syncs full weights into a server itself (selfplay.train)."""
    from selfplay.policy import VLLMPolicy
    from selfplay.vllm_server import ServerPolicy, VLLMServer

    rank = config.lora_rank if lora else None
    server = config.policy_server()
    if not server or not lora:
        return VLLMPolicy(model_path, lora_rank=rank, seed=config.seed, answer_tokens=config.max_completion_length)
    if server == "auto":
        server = VLLMServer(model_path, lora_rank=rank, seed=config.seed, log_path=run_dir / "vllm-server.log",
                            answer_tokens=config.max_completion_length)
        return ServerPolicy(server.start(), lora_rank=rank, server=server)
    return ServerPolicy(server, lora_rank=rank)


def new_dashboard(config: LoopConfig, domain, reward_funcs, reward_weights, checkpoint, console: Console,
                  plugged) -> Dashboard:
    weights = {f.__name__: w for f, w in zip(reward_funcs, reward_weights)}
    return Dashboard(config.steps, headline=domain.headline, weights=weights, console=console,
                     done=checkpoint_iteration(checkpoint), plugged=[p.name for p in plugged])


def train_iterations(config: LoopConfig, domain, model_path: str, run_dir, policy, tokenizer, reward_funcs,
                     reward_weights, rows, eval_rows, checkpoint, dashboard: Dashboard | None, run_eval=None,
                     writes_logs: bool = True):
    """The GRPO iterations, from `checkpoint` if given, shown on `dashboard` if given, logged into the run dir if
    `writes_logs` (the first of several trainer processes); the final adapter (or full weights) saved there."""
    from selfplay.train import build_trainer

    stats: dict = {}
    dataset, data_callbacks = domain.training_data(config, rows, eval_rows, policy, tokenizer, stats)
    with dashboard if dashboard is not None else contextlib.nullcontext(), StopAfterIteration() as stop:
        callbacks = [*data_callbacks, stop]
        if writes_logs:
            logger = RunLogger(run_dir, stats, on_metrics=dashboard.update if dashboard is not None else None)
            callbacks.append(logger)
        if policy is not None and eval_rows and config.eval_every:
            callbacks.append(EvalEvery(config.eval_every, config.steps, run_eval, stats))
        trainer = build_trainer(config, model_path, dataset, reward_funcs, reward_weights, policy, run_dir, stats,
                                callbacks, domain.stop_strings(config), domain.tools(config), domain.SAMPLE_COLUMNS)
        if writes_logs:
            logger.trainer = trainer
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if stop.requested and trainer.state.global_step < config.steps:  # Ctrl-C: this iteration is saved, stop
        raise KeyboardInterrupt
    if not trainer.accelerator.is_main_process:
        return trainer
    if policy is not None:
        trainer.model.save_pretrained(run_dir / "adapters" / "final")
    else:
        trainer.save_model(str(run_dir / "final"))
    return trainer


class EvalEvery(TrainerCallback):
    """Evaluate the policy vLLM serves every `every` iterations (not the last one: the final evaluation follows),
    timed as the iteration's `eval` part."""

    def __init__(self, every: int, steps: int, run_eval, stats: dict):
        self.every, self.steps, self.run_eval, self.stats = every, steps, run_eval, stats

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 and state.global_step < self.steps:
            with step_time.timed(self.stats, "eval"):
                self.run_eval(f"iteration {state.global_step}")


def print_header(console: Console, config: LoopConfig, run_dir, model_path: str, rewards: str) -> None:
    """Who runs where, in five lines (six with a vLLM server)."""
    import torch

    device = (f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available()
              else f"cpu ({cpu_name()}, {os.cpu_count()} cores)")
    training = "full fine-tune" if config.full_finetune else f"LoRA r={config.lora_rank}"
    if config.num_processes > 1:
        training += f", {config.num_processes} processes: accelerate {config.accelerate_config}"
    server = [("vllm", f"server {config.policy_server()}")] if config.policy_server() else []
    for label, value in (("run", f"{run_dir}  ({config.domain}, seed {config.seed}, {config.steps} iterations)"),
                         ("model", f"{model_path}  ({training}, lr {config.learning_rate:g})"),
                         ("device", device), *server, ("rewards", rewards), ("log", f"{run_dir / 'log.txt'}")):
        console.print(f"[bold]{label:>7}[/] {value}", highlight=False)


def summary(result: dict, change: dict, metrics: dict[str, str]) -> str:
    """One line: the domain's first metric on each held-out set, with its paired change since "before"."""
    key, label = next(iter(metrics.items()))
    parts = []
    for name, figures in result["sets"].items():
        if key in figures:
            since = change.get(name, {}).get(key)
            parts.append(f"{name} {label} {figures[key][0]:.3f}" + (f" ({describe_change(*since)})" if since else ""))
    return "  ".join(parts)


os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in TRL; we pin TRL's version
