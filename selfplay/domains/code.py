"""The code domain: write a Python function from its signature and docstring; hidden unit tests, run in a sandbox,
score it.

A row is `{"prompt": [chat messages], "tests": str, "entry_point": str, "source": str}`; the columns reach the
reward functions in `rewards.code`. Training tasks come from `--tasks`: "generated" (seeded instances of the task
families in `code_families`, each with randomised hidden tests) or a JSONL file in the HumanEval or MBPP format. The
held-out set is generated from a seed the training tasks never use (`--eval-tasks` of them) plus the first
`--eval-humaneval` HumanEval problems; a training task whose prompt is held out is dropped.

The policy trains on the share of hidden tests passed (`unit_test_pass_fraction`: a 135M model rarely passes every
test, and a group where all score 0 gives GRPO no gradient); pass@1 (all tests passed) is logged, overall and per
held-out source.

`--warm-start N` is expert iteration before GRPO: the policy samples answers for N training tasks, the shortest that
passes every hidden test is kept (rejection sampling), and the model is fine-tuned on those (`selfplay.sft.fine_tune`).
"""

import json
import random
import time
from dataclasses import dataclass


from rewards.code import CodeRewards
from sandboxes import get_sandbox
from selfplay.config import ConfigError
from selfplay.domains.base import Domain, Rewards
from selfplay.domains.code_families import generated_tasks
from selfplay.domains.code_tasks import Task, TaskFileError, humaneval_tasks, read_tasks
from selfplay.runlog import write_json

EVAL_SEED = 1_000_003  # training seeds are small integers: the held-out tasks never share their seed
WARM_SAMPLES = 4  # answers sampled per task for the warm start; at temperature 0.6 the base passes 17% of them
WARM_EPOCHS = 2  # passes over the kept answers (a few hundred tasks keep ~100)
OUTPUT_KEPT = 1000  # characters of a program's stdout and stderr in selfplay eval's results.jsonl
SYSTEM_PROMPT = "You are an expert Python programmer. Reply with the complete function in one ```python code block."


def task_prompt(task: Task) -> list[dict]:
    user = f"Complete this Python function.\n```python\n{task.prompt.rstrip()}\n```"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def task_row(task: Task) -> dict:
    return {"prompt": task_prompt(task), "tests": task.tests, "entry_point": task.entry_point, "source": task.source}


def eval_row(task: Task) -> dict:
    """A held-out row: its set is its source (generated, humaneval, a file's name), each summarised on its own; its
    id and reference solution (empty when unknown) go with it."""
    return {**task_row(task), "set": task.source, "id": task.task_id, "solution": task.solution}


def file_rows(config, path: str) -> list[dict]:
    """`selfplay eval code --file`: the tasks of a HumanEval or MBPP JSONL file (TaskFileError naming a bad row)."""
    tasks, _ = read_tasks(path, skip_bad=config.skip_bad)
    return [eval_row(task) for task in tasks]


def eval_details(rows: list[dict], answers: list[list[str]], rewards: Rewards) -> list[dict]:
    """Each answer's verdict: checks passed of all, why the program stopped, its exit status and output cut short."""
    code_rewards = rewards.resources[0]
    flat = [(row, answer) for row, row_answers in zip(rows, answers) for answer in row_answers]
    reports = code_rewards.reports([a for _, a in flat], [r["tests"] for r, _ in flat],
                                   [r["entry_point"] for r, _ in flat])
    verdicts, start = [], 0
    for row_answers in answers:
        verdicts.append({"verdicts": [
            None if r is None else {"passed": r.passed, "total": r.total, "stopped": r.run.stopped,
                                    "exit_code": r.run.exit_code, "stdout": r.run.stdout[:OUTPUT_KEPT],
                                    "stderr": r.run.stderr[:OUTPUT_KEPT]}
            for r in reports[start:start + len(row_answers)]]})
        start += len(row_answers)
    return verdicts


def check_references(rows: list[dict], rewards: Rewards) -> list[str]:
    """The ids of the rows whose reference solution (where the file has one) fails its own tests."""
    known = [row for row in rows if row.get("solution")]
    passed = rewards.resources[0].unit_test_reward(None, [row["solution"] for row in known],
                                                   tests=[row["tests"] for row in known],
                                                   entry_point=[row["entry_point"] for row in known])
    return [row["id"] for row, ok in zip(known, passed) if not ok]


def eval_rows(config) -> list[dict]:
    """The held-out set: `eval_tasks` generated tasks from a seed never trained on, then `eval_humaneval` HumanEval
    problems."""
    tasks = generated_tasks(config.eval_tasks, seed=EVAL_SEED) if config.eval_tasks else []
    if config.eval_humaneval:
        tasks += humaneval_tasks()[: config.eval_humaneval]
    return [eval_row(task) for task in tasks]


def train_rows(config, held_out: list[dict]) -> list[dict]:
    """`train_tasks` rows from `--tasks` (sampled when the file holds more), held-out prompts removed."""
    if config.tasks == "generated":
        tasks = generated_tasks(config.train_tasks, seed=config.seed)
    else:
        tasks, _ = read_tasks(config.tasks, skip_bad=config.skip_bad)
        tasks = random.Random(config.seed).sample(tasks, min(config.train_tasks, len(tasks)))
    excluded = {row["prompt"][-1]["content"] for row in held_out}
    rows = [row for row in map(task_row, tasks) if row["prompt"][-1]["content"] not in excluded]
    if not rows:
        raise TaskFileError(f"--tasks {config.tasks}: no training tasks left after the held-out set")
    random.Random(config.seed).shuffle(rows)
    return rows


def pass_at_1(wanted: str, unit_test_reward):
    """pass@1 (by `unit_test_reward`) over the rows whose source is `wanted` ("generated", "humaneval"); None for the
    other rows."""

    def metric(prompts, completions, *, tests, source, entry_point=None, **kwargs):
        kept = [t if s == wanted else None for t, s in zip(tests, source)]
        return unit_test_reward(prompts, completions, tests=kept, entry_point=entry_point)

    metric.__name__ = f"pass_at_1_{wanted}"
    return metric


def rewards(config) -> Rewards:
    """The reward functions, their weights (the pass fraction trains; pass@1 is logged), and the sandbox they share,
    closed at the end. The sandbox starts here, before vLLM: a missing one fails fast, saying what to install."""
    code_rewards = CodeRewards(get_sandbox(config.sandbox))
    funcs = [code_rewards.unit_test_pass_fraction, code_rewards.unit_test_reward,
             pass_at_1("generated", code_rewards.unit_test_reward), pass_at_1("humaneval", code_rewards.unit_test_reward)]
    return Rewards(funcs, [1.0, 0.0, 0.0, 0.0], [code_rewards])


def stop_strings(config) -> list[str]:
    """The end of the first code block: what follows is prose the tests never see."""
    return ["\n```\n"]


def warm_start(config, model_path: str, run_dir, rewards: Rewards, console, *, policy, tokenizer,
               rows: list[dict]) -> str:
    """Expert iteration: `WARM_SAMPLES` answers from the served policy for each of the first `config.warm_start`
    training tasks, the shortest one passing every test kept (run in the sandbox of the loop's `rewards`), a LoRA
    fine-tune on them merged into run_dir/warm/model. Returns that directory."""
    from selfplay.sft import fine_tune
    from selfplay.train import encode_prompt

    rows = rows[: config.warm_start]
    start = time.perf_counter()
    groups = policy.generate([encode_prompt(tokenizer, row["prompt"]) for row in rows], n=WARM_SAMPLES,
                             max_tokens=config.max_completion_length, temperature=config.temperature,
                             stop=stop_strings(config))
    policy.close()  # sampled: the fine-tune gets vLLM's memory
    texts = [c.text for group in groups for c in group]
    passed = rewards.resources[0].unit_test_reward(
        None, texts, tests=[row["tests"] for row in rows for _ in range(WARM_SAMPLES)],
        entry_point=[row["entry_point"] for row in rows for _ in range(WARM_SAMPLES)])
    examples, kept_rows = [], []
    for i, row in enumerate(rows):
        kept = [t for t, ok in zip(texts[i * WARM_SAMPLES:(i + 1) * WARM_SAMPLES],
                                    passed[i * WARM_SAMPLES:(i + 1) * WARM_SAMPLES]) if ok]
        if kept:
            answer = min(kept, key=len).rstrip() + "\n```"  # the stop string ended the block; the answer closes it
            examples.append({"prompt": row["prompt"], "completion": [{"role": "assistant", "content": answer}]})
            kept_rows.append({"prompt": row["prompt"], "answer": answer, "tests": row["tests"],
                              "entry_point": row["entry_point"]})
    sample_seconds = time.perf_counter() - start
    out = run_dir / "warm"
    out.mkdir(exist_ok=True)
    (out / "examples.jsonl").write_text("".join(json.dumps(row) + "\n" for row in kept_rows))
    console.print(f"[bold]warm start[/] {len(examples)} of {len(rows)} tasks have a passing sample "
                  f"({int(sum(passed))}/{len(passed)} samples pass); fine-tuning on them")
    if not examples:
        raise TaskFileError("--warm-start: no sampled answer passed its tests; use --warm-start 0")
    losses, train_seconds = fine_tune(model_path, examples, out, tokenizer, learning_rate=2e-4, epochs=WARM_EPOCHS,
                                      batch_size=8, lora_rank=config.lora_rank, seed=config.seed, console=console)
    write_json(out / "warm.json", {"tasks": len(rows), "samples": len(texts), "samples_passed": int(sum(passed)),
                                   "examples": len(examples), "first_loss": losses[0] if losses else None,
                                   "last_loss": losses[-1] if losses else None, "sample_seconds": sample_seconds,
                                   "train_seconds": train_seconds})
    return str(out / "model")


@dataclass
class CodeSettings:
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

    def validate(self, config) -> None:
        for name in ("train_tasks", "eval_tasks", "eval_humaneval"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        if self.sandbox not in ("auto", "bwrap", "docker"):
            raise ConfigError(f"--sandbox {self.sandbox!r}: choose auto, bwrap or docker")


class CodeDomain(Domain):
    """Python functions from their signature and docstring, scored by hidden unit tests in a sandbox."""

    name = "code"
    Settings = CodeSettings
    EVAL_METRICS = {"unit_test_reward": "pass@1", "unit_test_pass_fraction": "tests passed"}
    HEADLINE = "reward/unit_test_reward"
    SUCCESS = "unit_test_reward"
    # expert iteration on 300 tasks (+13 points of pass@1 before GRPO adds its own); the base model passes 17% of its
    # samples at temperature 0.6 and 5% at 1.0 (greedy: 21%); a short function fits in 256 tokens
    defaults = {"learning_rate": 3e-4, "warm_start": 300, "temperature": 0.6, "max_completion_length": 256}

    train_rows = staticmethod(train_rows)
    eval_rows = staticmethod(eval_rows)
    file_rows = staticmethod(file_rows)
    eval_details = staticmethod(eval_details)
    check_references = staticmethod(check_references)
    rewards = staticmethod(rewards)
    stop_strings = staticmethod(stop_strings)
    warm_start = staticmethod(warm_start)

    def describe(self, config, rewards: Rewards) -> str:
        return f"{type(rewards.resources[0].sandbox).__name__.removesuffix('Sandbox').lower()} sandbox"
