"""The self-improvement loop, top to bottom: config -> model -> policy -> eval -> (generate, score, update)* -> eval.

    selfplay loop --domain chess --steps 20        # or: make loop DOMAIN=chess STEPS=20 (DOMAIN=code: Python)

1. the policy model is resolved (the built-in SmolLM2-135M-Instruct is built on first use);
2. vLLM serves it; the held-out set is answered greedily and scored ("before");
3. TRL's GRPOTrainer runs `steps` iterations: vLLM samples a group per prompt, the domain's reward functions score
   them, TRL updates the LoRA adapter, and the new adapter is hot-loaded into vLLM;
4. the held-out set is scored again ("after"; and every `eval_every` iterations on the way, into eval.jsonl);
   everything lands in runs/<run-id>/ (see selfplay.runlog).
"""

import dataclasses
import logging
import os

from rich.console import Console
from transformers import TrainerCallback

from selfplay.config import LoopConfig
from selfplay.dashboard import Dashboard, output_console
from selfplay.domains import get_domain
from selfplay.evaluate import compare, eval_table, evaluate
from selfplay.model import resolve_model
from selfplay.runlog import RunLogger, append_jsonl, create_run_dir, write_json

log = logging.getLogger(__name__)


def run_loop(config: LoopConfig, console: Console | None = None) -> dict:
    console = console or output_console()
    domain = get_domain(config.domain)
    model_path = resolve_model(config.model)
    eval_rows = domain.eval_rows(config)
    rows = domain.train_rows(config, eval_rows)  # a bad position or task file stops here: no run dir, no vLLM
    run_dir = create_run_dir(config.runs_dir, config.run_name())
    settings = {**dataclasses.asdict(config), "run": run_dir.name, "model_path": model_path}
    write_json(run_dir / "config.json", settings)
    console.print(f"[bold]run[/] {run_dir}")
    console.print_json(data=settings)

    import torch
    from transformers import AutoTokenizer

    from selfplay.policy import VLLMPolicy
    from selfplay.train import build_trainer

    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    reward_funcs, reward_weights, engines = domain.reward_funcs(config)
    lora = not config.full_finetune
    policy = None
    try:
        policy = VLLMPolicy(model_path, lora_rank=config.lora_rank if lora else None, seed=config.seed)

        def run_eval(label: str) -> dict:
            result = evaluate(policy, tokenizer, eval_rows, reward_funcs, max_tokens=config.max_completion_length,
                              stop=domain.stop_strings(config), references=domain.eval_references)
            append_jsonl(run_dir / "eval.jsonl", [{"label": label, **result}])
            if label == "before":
                console.print(eval_table(f"held-out {label} (95% intervals)", domain.EVAL_METRICS, result))
            else:
                console.print(f"[bold]eval {label}[/] {summary(result, domain.EVAL_METRICS)}")
            return result

        results = {}
        if eval_rows:
            results["before"] = run_eval("before")
        if config.warm_start:  # fine-tune first (the domain's supervised targets), then GRPO from that model
            policy.close()
            model_path = domain.warm_start(config, model_path, run_dir, engines, console)
            policy = VLLMPolicy(model_path, lora_rank=config.lora_rank if lora else None, seed=config.seed)
            if eval_rows:
                results["fine-tuned"] = run_eval("fine-tuned")
        if not lora:  # full weights: TRL generates and syncs itself (HF generate on CPU, its colocated vLLM on CUDA)
            policy.close()

        stats: dict = {}
        dataset, data_callbacks = domain.training_data(config, rows, eval_rows, policy, tokenizer, stats)
        with Dashboard(config.steps, headline=domain.HEADLINE, console=console) as dashboard:
            logger = RunLogger(run_dir, stats, on_metrics=dashboard.update)
            callbacks = [*data_callbacks, logger]
            if lora and eval_rows and config.eval_every:
                callbacks.append(EvalEvery(config.eval_every, config.steps, run_eval))
            trainer = build_trainer(
                config, model_path, dataset, reward_funcs, reward_weights, policy if lora else None, run_dir,
                stats, callbacks, domain.stop_strings(config),
            )
            logger.trainer = trainer
            trainer.train()
        if lora:
            trainer.model.save_pretrained(run_dir / "adapters" / "final")
        else:
            trainer.save_model(str(run_dir / "final"))
            del trainer  # free the trained copy before vLLM loads the saved one
            if eval_rows:
                policy = VLLMPolicy(str(run_dir / "final"), lora_rank=None, seed=config.seed)
                policy.version = config.steps

        if eval_rows:
            results["after"] = run_eval("after")
            results["change"] = compare(eval_rows, results["before"], results["after"])
            console.print(eval_table("held-out before -> after (95% intervals; change paired over the same rows)",
                                     domain.EVAL_METRICS, results["after"], results["before"], results["change"]))
            write_json(run_dir / "eval.json", results)
        return results
    finally:
        if policy is not None:
            policy.close()
        engines.close()


class EvalEvery(TrainerCallback):
    """Evaluate the policy vLLM serves every `every` iterations (not the last one: the final evaluation follows)."""

    def __init__(self, every: int, steps: int, run_eval):
        self.every, self.steps, self.run_eval = every, steps, run_eval

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 and state.global_step < self.steps:
            self.run_eval(f"iteration {state.global_step}")


def summary(result: dict, metrics: dict[str, str]) -> str:
    """One line: the domain's metrics over all held-out rows."""
    return "  ".join(f"{label} {result[k]:.3f}" for k, label in metrics.items() if result.get(k) is not None)


os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in TRL; we pin TRL's version
