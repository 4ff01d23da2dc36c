"""Tools inside answers: the call's text, the results spliced into the tokens with their env_mask, the budget, the
logprobs vLLM reports after a result (the trainer's), the calculator against hostile input, and a loop iteration with
many tool calls through real vLLM and TRL."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "examples" / "arithmetic"))

from selfplay.policy import Completion
from selfplay.tools import MAX_CALLS, Tool, count, sample
from selfplay_arithmetic.calculator import calculate
from tool_domain import ANSWER, FREQUENT


def test_a_call_is_the_text_between_open_and_close():
    seen = []
    tool = Tool(open="<calc>", close="</calc>", run=lambda call: seen.append(call) or "=1")
    assert tool.result("so <calc>2+3</calc>") == "=1"
    assert tool.result("<calc>1</calc>=1 then <calc>4*5</calc>") == "=1"
    assert Tool(open="", close="!", run=lambda call: call.upper()).result("all of it!") == "ALL OF IT"
    assert seen == ["2+3", "4*5"]


def test_a_tool_that_raises_answers_with_the_error():
    tool = Tool(open="<x>", close="</x>", run=lambda call: str(1 / int(call)))
    assert tool.result("<x>0</x>") == "error: division by zero"


def test_count_counts_the_results_not_their_tokens():
    assert count([1, 1, 0, 0, 1, 0, 1]) == 2 and count([0, 1]) == 1 and count([1, 1]) == 0


class ScriptedFakePolicy:
    """A stand-in for VLLMPolicy that answers each request from a script of token lists (one token = one letter),
    recording the prompts and budgets it was asked for."""

    def __init__(self, script: list[list[str]]):
        self.script, self.requests = list(script), []

    def generate(self, prompts, *, n, max_tokens, stop, include_stop, seed, **sampling):
        budgets = max_tokens if isinstance(max_tokens, list) else [max_tokens] * len(prompts)
        groups = []
        for prompt, budget in zip(prompts, budgets):
            self.requests.append((list(prompt), budget))
            group = []
            for _ in range(n):
                letters = self.script.pop(0)[:budget]
                reason = letters[-1] if letters and letters[-1] in stop else None
                ids = [ord(c) for c in letters]
                group.append(Completion(ids, [-1.0] * len(ids), "".join(letters), reason))
            groups.append(group)
        return groups


class LetterTokenizer:
    def __call__(self, text, add_special_tokens):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens):
        return "".join(map(chr, ids))


def test_results_are_spliced_in_masked_and_the_answer_continues_from_them():
    policy = ScriptedFakePolicy([list("ab!"), list("xy"), list("cd!"), list("z")])
    tool = Tool(open="", close="!", run=lambda call: f"[{call}]")
    [[a], [b]] = sample(policy, LetterTokenizer(), [[1], [2]], [tool], n=1, max_tokens=16, seed=0)
    assert a.text == "ab![ab]cd![cd]z" and b.text == "xy" and b.env_mask == [1, 1]
    assert a.env_mask == [1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1] and len(a.logprobs) == len(a.completion_ids)
    assert [lp for lp, m in zip(a.logprobs, a.env_mask) if m == 0] == [0.0] * 8
    # each continuation's prompt is the prompt and the answer so far, its budget what is left of 16
    assert policy.requests[2:] == [([1, *map(ord, "ab![ab]")], 9), ([1, *map(ord, "ab![ab]cd![cd]")], 2)]


def test_the_budget_holds_and_calls_stop_after_max_calls():
    policy = ScriptedFakePolicy([list("!")] * (MAX_CALLS + 5))
    tool = Tool(open="", close="!", run=lambda call: "r")
    [[answer]] = sample(policy, LetterTokenizer(), [[1]], [tool], n=1, max_tokens=100, seed=0)
    assert count(answer.env_mask) == MAX_CALLS and answer.text == "!r" * MAX_CALLS + "!"
    [[short]] = sample(ScriptedFakePolicy([list("!")] * 3), LetterTokenizer(), [[1]],
                       [Tool(open="", close="!", run=lambda call: "long result")], n=1, max_tokens=5, seed=0)
    assert short.text == "!long" and short.env_mask == [1, 0, 0, 0, 0]


@pytest.mark.parametrize("expression, value", [("7*12", "=84"), ("(3+4)*2-1", "=13"), ("7/2", "=3.5"),
                                               ("-3 % 2", "=1"), ("2**-2", "=0.25"), (" 2 ** 10 ", "=1024")])
def test_the_calculator_computes(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize("expression, why", [
    ("__import__('os').system('touch /tmp/pwned')", "not arithmetic"),
    ("().__class__.__bases__[0].__subclasses__()", "not arithmetic"),
    ("x + 1", "not arithmetic: x"), ("True + 1", "not arithmetic"), ("'a' * 3", "not arithmetic"),
    ("9**9**9", "power too large"), ("10**15 * 10", "too large"), ("1e999", "too large"),
    ("1/0", "division by zero"), ("(-8) ** 0.5", "not a real number"), ("2 +", "invalid syntax"),
    ("(" * 300 + "1" + ")" * 300, "longer than 200"), ("lambda: 1", "not arithmetic"),
])
def test_the_calculator_refuses_what_is_not_arithmetic(expression, why):
    result = calculate(expression)
    assert result.startswith("=error: ") and why in result
    assert not Path("/tmp/pwned").exists()


@pytest.mark.slow
def test_vllm_logprobs_after_a_result_are_the_trainers(tiny_model):
    """Real vLLM on the tiny model with a tool it calls at every `e`: the results sit in the tokens where env_mask
    is 0, and the policy's tokens after them carry the logprobs the trainer's model gives them in that context."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfplay.policy import VLLMPolicy

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    prompt = tokenizer("Hello there", add_special_tokens=False)["input_ids"]
    result_ids = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    policy = VLLMPolicy(tiny_model, lora_rank=None)
    try:
        [group] = sample(policy, tokenizer, [prompt], [Tool(open="", close="e", run=lambda call: ANSWER)], n=4,
                         max_tokens=32, temperature=1.0, seed=3)
    finally:
        policy.close()
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    assert sum(count(answer.env_mask) for answer in group) >= 4
    for answer in group:
        assert len(answer.completion_ids) <= 32 and ANSWER in answer.text
        ids, mask = answer.completion_ids, answer.env_mask
        runs = "".join(map(str, mask)).split("1")
        assert all(len(run) in (0, len(result_ids)) or run == "0" * len(run) for run in runs)
        assert [t for t, m in zip(ids, mask) if m == 0][: len(result_ids)] == result_ids
        with torch.no_grad():
            logits = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1]
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids)[:, None])[:, 0]
        policy_tokens = torch.tensor(mask, dtype=torch.bool)
        served = torch.tensor(answer.logprobs)
        assert (served - expected)[policy_tokens].abs().max() < 2e-3


@pytest.mark.slow
def test_a_loop_iteration_with_tool_calls_trains_and_evaluates(tiny_model, tmp_path, monkeypatch):
    from selfplay.config import make_config
    from selfplay.loop import run_loop

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    config = make_config(domain=FREQUENT, model=tiny_model, runs_dir=str(tmp_path), run="tools", steps=1,
                         prompts_per_step=2, num_generations=4, micro_batch_size=4, problems=8, eval_problems=4,
                         max_completion_length=24)
    run_loop(config)
    [metrics] = [json.loads(line) for line in (tmp_path / "tools" / "metrics.jsonl").read_text().splitlines()]
    assert metrics["selfplay/tool_calls_per_answer"] > 0
    samples = [json.loads(line) for line in (tmp_path / "tools" / "samples.jsonl").read_text().splitlines()]
    assert any(ANSWER in json.dumps(sample) for sample in samples)
    evaluation = json.loads((tmp_path / "tools" / "eval.json").read_text())
    assert any(ANSWER in completion for completion in evaluation["after"]["completions"])


def test_tools_with_a_full_finetune_is_one_line(tmp_path):
    here = Path(__file__).parent
    done = subprocess.run(
        [str(Path(sys.executable).with_name("selfplay")), "loop", "--domain", FREQUENT, "--full-finetune",
         "--runs-dir", str(tmp_path)],
        env={**os.environ, "PYTHONPATH": f"{here}:{here.parent / 'examples' / 'arithmetic'}"}, capture_output=True,
        text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "tools are answered by selfplay's vLLM rollout" in done.stderr and not list(tmp_path.iterdir())
