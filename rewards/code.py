"""Unit-test rewards for model-written Python, run in a sandbox, in TRL's reward-function shape.

Every reward is `f(prompts, completions, *, tests, entry_point=None, **kwargs) -> list[float | None]`: `tests` is
the column holding a row's tests, HumanEval-style (`def check(candidate): ...`, with `entry_point` naming the
function that `candidate` stands for) or plain `assert` lines; `None` (or "") marks a row that is not code.

    rewards = CodeRewards(get_sandbox("bwrap"))  # CodeRewards(): get_sandbox("auto")
    GRPOTrainer(..., reward_funcs=[rewards.unit_test_reward, rewards.unit_test_pass_fraction])
    rewards.close()  # or `with CodeRewards() as rewards:`

The rewards are methods of a `CodeRewards`, which owns the sandbox they share; a method's name is its metric name:
- `unit_test_reward`: 1 if every check passed, else 0;
- `unit_test_pass_fraction`: the share of checks that passed.
A script that ends without `close()` still exits. With bwrap no sandbox process outlives it, even after kill -9;
Docker's containers are removed by `close()` or by the next `DockerSandbox` (see `sandboxes.docker`).

The code is the first ```python (or ```py, or untagged) fenced block of the completion, else the whole text: the
answer usually comes first and later blocks are examples of its use. The completion holds the full definition.

A check is one top-level statement that holds an `assert` (of a non-constant: `assert True` is no check): of the
tests module, or of `check`'s body for HumanEval-style tests. Every other statement (imports, helpers, METADATA,
`x = candidate(...)`) is setup, run in order in the same namespace. A check passes when it runs without raising.

How the verdict is kept out of the solution's reach (one sandbox run per completion, two interpreters):
- the trusted *runner* makes itself non-dumpable (so no process of the run may ptrace it or open its /proc memory
  or fds), reads the plan (a per-run secret, the tests) from a file, deletes it, and only then starts the
  *worker*, a second interpreter that loads the solution. The worker is never given the tests or the secret;
- the tests run in the runner. Functions of the solution (`candidate`, and helpers the tests call such as
  HumanEval's `poly`) are proxies: the arguments go to the worker as Python literals, the worker calls the
  solution and sends back its result as a literal, which the runner parses with `ast.literal_eval`. So the
  runner only ever holds plain data (int, float, str, bytes, bool, None, list, tuple, dict, set): no object of the
  solution's (always-equal `__eq__`, int subclasses) and none of its patches (`unittest`, `AssertionError`,
  `check`, `print`) exist where the asserts run;
- for each passing check the runner writes `index HMAC(secret, index)` to stdout; the parent counts the checks
  whose line is there. A missing line (early exit, crash, timeout, killed runner) is a failed check, and a line
  cannot be forged without the secret, which never was in any file, memory or fd the worker can reach.
A solution that fails to load, loops, crashes or returns something that is not plain data fails the checks that
need it. Infrastructure failures raise `SandboxError` (the sandbox, or the runner's self-protection, failed).

What an adversarial solution can still do:
- see each check's arguments (it is called with them) and answer from a table, as any test-based grader allows;
- make HumanEval helpers it defines (`poly`, `encode_cyclic`) agree with its answers: the tests trust them, as in
  HumanEval's own harness;
- kill the runner, or write to (or read from) the run's stdout pipe through /proc/1/fd/1 where the sandbox lets it
  open that: this only loses passes, since without the secret no line it writes counts;
- whatever the sandbox does not stop (see `sandboxes.bwrap`).
Limits of the design: arguments and results must be literals (no NaN, no functions, no numpy values), and the
solution gets copies of the arguments, so tests cannot see it mutate them in place.
"""

import ast
import hashlib
import hmac
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rewards.completions import completion_text
from sandboxes import Limits, RunResult, Sandbox, SandboxError, get_sandbox

__all__ = ["CodeRewards", "TestReport", "extract_code", "run_tests", "split_tests"]

LIMITS = Limits(wall_s=10.0)
WORKERS = 2  # completions of a batch scored at once
RUNNER_UNPROTECTED = 3  # the runner's exit status when it could not make itself non-dumpable
FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)

# Turns plain data into a Python literal that ast.literal_eval reads back to an equal value of the same types.
ENCODE = r'''
import sys
sys.set_int_max_str_digits(0)

def encode(value):
    kind = type(value)
    if kind is float:
        if value != value:
            raise ValueError("NaN has no literal")
        return repr(value) if abs(value) != float("inf") else ("1e999" if value > 0 else "-1e999")
    if kind in (bool, int, str, bytes, type(None)):
        return repr(value)
    if kind is list:
        return "[" + ", ".join(encode(v) for v in value) + "]"
    if kind is tuple:
        return "(" + "".join(encode(v) + ", " for v in value) + ")"
    if kind is dict:
        return "{" + ", ".join(encode(k) + ": " + encode(v) for k, v in value.items()) + "}"
    if kind is set:
        return "{" + ", ".join(encode(v) for v in value) + "}" if value else "set()"
    raise TypeError("not plain data: " + kind.__name__)
'''

RUNNER = ENCODE + r'''
import ast, ctypes, hashlib, hmac, os, subprocess

if ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE 0: no ptrace, no /proc/<pid>/mem or fd
    sys.exit(3)
with open("plan") as f:
    plan = ast.literal_eval(f.read())
os.unlink("plan")
secret = bytes.fromhex(plan["secret"])

to_worker, worker_in = os.pipe()
worker_out, from_worker = os.pipe()
worker = subprocess.Popen([sys.executable, "worker.py", str(to_worker), str(from_worker)], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(to_worker, from_worker))
os.close(to_worker)
os.close(from_worker)
requests, replies = os.fdopen(worker_in, "w"), os.fdopen(worker_out, "r")

def receive():
    line = replies.readline()
    if not line:
        raise RuntimeError("the solution's process ended")
    status, value = ast.literal_eval(line)
    if status != "ok":
        raise RuntimeError("the solution raised " + str(value))
    return value

def proxy(name):
    def call(*args, **kwargs):
        requests.write(encode((name, list(args), kwargs)) + "\n")
        requests.flush()
        return receive()
    return call

try:
    names = [name for name in receive() if type(name) is str]
except Exception:
    names = []
namespace = {"__name__": "tests", **{name: proxy(name) for name in names}}
if plan["entry_point"]:
    namespace["candidate"] = proxy(plan["entry_point"])
index = 0
for source, is_check in plan["statements"]:
    try:
        exec(compile(source, "<tests>", "exec"), namespace)
        passed = True
    except Exception:
        passed = False
    if is_check:
        if passed:
            tag = hmac.new(secret, str(index).encode(), hashlib.sha256).hexdigest()
            os.write(1, (str(index) + " " + tag + "\n").encode())
        index += 1
worker.kill()
'''

WORKER = ENCODE + r'''
import ast, os

requests, replies = os.fdopen(int(sys.argv[1]), "r"), os.fdopen(int(sys.argv[2]), "w")

def reply(status, value):
    try:
        line = encode((status, value))
    except Exception as error:
        line = encode(("error", type(error).__name__))
    replies.write(line + "\n")
    replies.flush()

solution = {"__name__": "solution"}
try:
    with open("solution.py") as f:
        exec(compile(f.read(), "solution.py", "exec"), solution)
except BaseException as error:
    reply("error", type(error).__name__)
    sys.exit(1)
reply("ok", [name for name, value in solution.items() if callable(value) and not name.startswith("__")])
for line in requests:
    try:
        name, args, kwargs = ast.literal_eval(line)
        reply("ok", solution[name](*args, **kwargs))
    except Exception as error:
        reply("error", type(error).__name__)
'''


@dataclass(frozen=True)
class TestReport:
    """How one solution fared: `passed` of `total` checks, and the sandbox run that told."""

    __test__ = False  # not a pytest test class

    passed: int
    total: int
    run: RunResult

    @property
    def all_passed(self) -> bool:
        return self.passed == self.total


def extract_code(text: str) -> str:
    """The first ```python (```py, untagged) fenced block of `text`, else all of it."""
    match = FENCE.search(text)
    return match.group(1) if match else text


def _is_check(statement: ast.stmt) -> bool:
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return False  # defining a helper runs none of its asserts
    return any(isinstance(node, ast.Assert) and not isinstance(node.test, ast.Constant)
               for node in ast.walk(statement))


def split_tests(tests: str, entry_point: str | None = None) -> list[tuple[str, bool]]:
    """The tests as (statement source, is it a check) in run order; ValueError if they hold no check."""
    module = ast.parse(tests)
    check = next((s for s in module.body if isinstance(s, ast.FunctionDef) and s.name == "check"), None)
    if check is not None and not entry_point:
        raise ValueError("tests define check(candidate) but the row names no entry_point")
    statements = [s for s in module.body if s is not check] + (check.body if check else [])
    plan = [(ast.unparse(s), _is_check(s)) for s in statements]
    if not any(is_check for _, is_check in plan):
        raise ValueError(f"tests hold no assert to check: {tests[:200]!r}")
    return plan


def _tag(secret: bytes, index: int) -> str:
    return hmac.new(secret, str(index).encode(), hashlib.sha256).hexdigest()


def run_tests(code: str, tests: str, sandbox: Sandbox, *, entry_point: str | None = None,
              limits: Limits = LIMITS) -> TestReport:
    """Run `tests` against the solution `code` in one sandbox run; SandboxError if the sandbox failed."""
    statements = split_tests(tests, entry_point)
    total = sum(is_check for _, is_check in statements)
    secret = secrets.token_bytes(32)
    plan = {"secret": secret.hex(), "entry_point": entry_point, "statements": statements}
    files = {"runner.py": RUNNER, "worker.py": WORKER, "solution.py": code, "plan": repr(plan)}
    run = sandbox.run(["python3", "runner.py"], files=files, limits=limits)
    if run.exit_code == RUNNER_UNPROTECTED:
        raise SandboxError(f"the test runner could not make itself non-dumpable (prctl): {run.stderr[-500:]}")
    lines = set(run.stdout.splitlines())
    passed = sum(f"{i} {_tag(secret, i)}" in lines for i in range(total))
    return TestReport(passed, total, run)


class CodeRewards:
    """The unit-test rewards, sharing one sandbox that they own (`get_sandbox("auto")` when none is given): `close()`
    (or leaving `with`) ends what it keeps between runs. Each is a bound method, whose `__name__` TRL takes as its
    metric name."""

    def __init__(self, sandbox: Sandbox | None = None):
        self.sandbox = sandbox if sandbox is not None else get_sandbox("auto")

    def unit_test_reward(self, prompts, completions, *, tests, entry_point=None, **kwargs) -> list[float | None]:
        """1 if the solution passed every check of its row's tests, else 0; None for rows without tests."""
        return [None if r is None else float(r.all_passed) for r in self.reports(completions, tests, entry_point)]

    def unit_test_pass_fraction(self, prompts, completions, *, tests, entry_point=None, **kwargs
                                ) -> list[float | None]:
        """The share of its row's checks the solution passed; None for rows without tests."""
        return [None if r is None else r.passed / r.total for r in self.reports(completions, tests, entry_point)]

    def reports(self, completions, tests, entry_point=None) -> list[TestReport | None]:
        """Each solution's `TestReport` (checks passed, and the sandbox run: output, exit, why it stopped), None for
        rows without tests."""
        entry_points = entry_point or [None] * len(completions)

        def report(row: int) -> TestReport | None:
            if not tests[row]:
                return None
            return run_tests(extract_code(completion_text(completions[row])), tests[row], self.sandbox,
                             entry_point=entry_points[row])

        with ThreadPoolExecutor(WORKERS) as pool:
            return list(pool.map(report, range(len(completions))))

    def close(self) -> None:
        self.sandbox.close()

    def __enter__(self) -> "CodeRewards":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
