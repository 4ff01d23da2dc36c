"""The run directory `runs/<run-id>/` and what the loop writes into it.

    config.json     every setting (also printed at start)
    metrics.jsonl   one line per iteration: reward mean/std, per-reward means, zero-spread groups, loss, KL,
                    generation tokens/s, reward evals/s, step seconds and their parts (selfplay.step_time), policy
                    version (+ TRL's raw log under "trl")
    samples.jsonl   every prompt, completion, reward(s), advantage, the policy version that sampled it, SAMPLE_COLUMNS
    eval.json       the held-out evaluation before and after training
    eval.jsonl      every evaluation as it happens: before, every `eval_every` iterations, after
    status.json     running, finished, crashed (with the error) or interrupted; the pid, start and end times
    log.txt         everything third-party (vLLM, TRL, torch warnings) that `selfplay loop` kept off the terminal
    adapters/       the LoRA adapter of the latest policy versions, and adapters/final
"""

import json
import math
import os
import time
from pathlib import Path

from transformers import TrainerCallback

from rewards.completions import completion_text
from selfplay import step_time


class RunDirError(RuntimeError):
    """The run directory cannot be used; the message says why."""


def create_run_dir(runs_dir: str, name: str) -> Path:
    path = free_run_dir(runs_dir, name)
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_run_dir(runs_dir: str, name: str) -> Path:
    """Where run `name` goes; RunDirError if the name is not a plain directory name or a run is there already."""
    if not name or "/" in name or name in (".", ".."):
        raise RunDirError(f"run name {name!r} must be a plain directory name")
    path = Path(runs_dir) / name
    if (path / "metrics.jsonl").exists():
        raise RunDirError(f"{path} already holds a run: choose another RUN name, or continue it with selfplay loop "
                          f"--resume {name} (nothing was overwritten)")
    return path


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def read_status(run_dir: Path) -> dict:
    path = Path(run_dir) / "status.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as error:
        raise RunDirError(f"{path}: not valid JSON ({error.msg}): the file is half-written") from None


def write_status(run_dir: Path, status: str, **fields) -> None:
    """status.json: what `selfplay runs` reports. Written whole, then renamed, so it is never half-written."""
    path = Path(run_dir) / "status.json"
    data = {**read_status(run_dir), "status": status, "pid": os.getpid(), "updated": time.time(), **fields}
    tmp = path.with_suffix(".tmp")
    write_json(tmp, data)
    os.replace(tmp, path)


def append_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")


def _clean(value):
    """JSON has no NaN: a metric that could not be computed is null."""
    return None if isinstance(value, float) and math.isnan(value) else value


class RunLogger(TrainerCallback):
    """Writes metrics.jsonl and samples.jsonl after every optimizer step, and feeds the progress display."""

    def __init__(self, run_dir: Path, stats: dict, on_metrics=None):
        self.run_dir, self.stats, self.on_metrics = run_dir, stats, on_metrics
        self.trainer = None  # set by the loop: the samples and their advantages live in the trainer's log buffer

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:  # the final summary log has no per-step metrics
            return
        stats = self.stats
        reward_names = [k.split("/")[1] for k in logs if k.startswith("rewards/") and k.endswith("/mean")]
        row = {
            "iteration": state.global_step,
            "policy_version": stats.get("policy_version"),
            "reward/mean": logs.get("reward"),
            "reward/std": logs.get("reward_std"),
            **{f"reward/{name}": logs.get(f"rewards/{name}/mean") for name in reward_names},
            "reward/zero_std_frac": logs.get("frac_reward_zero_std"),
            "train/loss": logs.get("loss"),
            "train/kl": logs.get("kl"),
            "gen/tokens_per_s": stats.get("gen/tokens_per_s"),
            "reward/evals_per_s": stats.get("reward/evals", 0) / max(stats.get("reward/seconds", 0.0), 1e-9),
            **step_time.finish(stats),  # the wall time and its parts
            **{k: v for k, v in stats.items() if k.startswith("selfplay/")},
            "trl": {k: _clean(v) for k, v in logs.items()},
        }
        row = {k: _clean(v) for k, v in row.items()}
        append_jsonl(self.run_dir / "metrics.jsonl", [row])
        samples = self._write_samples(state.global_step, stats.get("policy_version"))
        stats.pop("reward/evals", None)
        stats.pop("reward/seconds", None)
        if self.on_metrics:
            self.on_metrics(row, samples)

    def _write_samples(self, iteration: int, version) -> list[dict]:
        from selfplay.trl_seam import last_batch

        buffer = last_batch(self.trainer)
        rewards = {name: list(values) for name, values in buffer["rewards"].items()}
        extra = {name: list(values) for name, values in buffer["extra"].items()}
        rows = []
        for i, (prompt, completion, advantage) in enumerate(zip(buffer["prompt"], buffer["completion"], buffer["advantages"])):
            rows.append(
                {
                    "iteration": iteration,
                    "policy_version": version,
                    "prompt": prompt,
                    "completion": completion_text(completion),
                    "rewards": {name: _clean(values[i]) for name, values in rewards.items()},
                    "advantage": advantage,
                    **{name: values[i] for name, values in extra.items()},
                }
            )
        append_jsonl(self.run_dir / "samples.jsonl", rows)
        return rows
