"""Continuing a run that stopped (Ctrl-C, kill -9, a power cut) from its last complete iteration.

    config = saved_config(run_dir)            # the run's own settings; RunDirError when unreadable or foreign
    checkpoint = latest_checkpoint(run_dir)   # runs/<run>/trainer/checkpoint-<k>, or None before the first one
    truncate_logs(run_dir, iteration)         # metrics, samples and eval jsonl end at that iteration, nothing twice

The trainer saves a checkpoint after every iteration (TRL/transformers: the adapter or weights, optimizer, scheduler,
RNG states, and the data position through the global step); `trainer_state.json` is written last, so a checkpoint
that has it is complete. The logs may run one iteration past the newest checkpoint (a kill between writing them and
saving): they are cut back to it.
"""

import dataclasses
import json
import os
from pathlib import Path

from selfplay.config import LOOP_FIELDS, ConfigError, LoopConfig, make_config
from selfplay.domains import DomainError, get_domain
from selfplay.runlog import RunDirError

LOGS = ("metrics.jsonl", "samples.jsonl")


def saved_config(run_dir: Path) -> LoopConfig:
    path = run_dir / "config.json"
    try:
        settings = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path} is missing: {run_dir} is not a run directory") from None
    except json.JSONDecodeError as error:
        raise RunDirError(f"{path}: not valid JSON ({error.msg}, line {error.lineno}): the file is "
                          "half-written") from None
    settings = {k: v for k, v in settings.items() if k not in ("run", "model_path")}
    try:
        domain = get_domain(settings.get("domain", "chess"))
    except DomainError as error:
        raise RunDirError(f"{path}: {error}") from None
    unknown = sorted(set(settings) - LOOP_FIELDS - {f.name for f in dataclasses.fields(domain.Settings)})
    if unknown:
        raise RunDirError(f"{path}: settings {', '.join(unknown)} are unknown to this version of selfplay (and its "
                          f"{domain.name} domain); resume it with the version that started it")
    try:
        config = make_config(**settings, run=run_dir.name)
        config.validate()
    except ConfigError as error:
        raise RunDirError(f"{path}: {error}") from None
    return config


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (its trainer_state.json reads), or None."""
    checkpoints = sorted((run_dir / "trainer").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]),
                         reverse=True)
    for checkpoint in checkpoints:
        try:
            json.loads((checkpoint / "trainer_state.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue  # cut short while saving: the one before is complete
        return checkpoint
    return None


def checkpoint_iteration(checkpoint: Path | None) -> int:
    return json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] if checkpoint else 0


def truncate_logs(run_dir: Path, iteration: int) -> None:
    """Keep the log rows of iterations 1..`iteration` (and the evaluations before training and of those iterations);
    a last line cut short goes too. Each file is rewritten whole, then renamed over the old one."""
    for name in (*LOGS, "eval.jsonl"):
        path = run_dir / name
        if not path.exists():
            continue
        kept = []
        for line in path.read_text().split("\n"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # blank, or cut short by the kill
            if keep(row, iteration, name == "eval.jsonl"):
                kept.append(line + "\n")
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)


def keep(row: dict, iteration: int, evaluation: bool) -> bool:
    if not evaluation:
        return row.get("iteration", 0) <= iteration
    label = row.get("label", "")
    if label in ("before", "fine-tuned"):
        return True
    return label.startswith("iteration ") and int(label.split()[1]) <= iteration


def earlier_evaluations(run_dir: Path) -> dict:
    """The evaluations a resumed run does not repeat: before training, and of the warm-started model."""
    path = run_dir / "eval.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return {row["label"]: row for row in rows if row.get("label") in ("before", "fine-tuned")}
