"""Reward functions plugged in from outside the package: `--reward pkg.module:function[=weight]` or an installed
entry point of the group `selfplay.rewards` (`--reward name`).

    selfplay loop --domain chess --reward my_rewards:short_answer=0.2      # adds to the domain's rewards
    selfplay loop --domain chess --reward my_rewards:short_answer --rewards-only
    selfplay rewards check my_rewards:short_answer --domain chess           # what it returns on sample rows

A reward has TRL's signature `f(prompts, completions, **columns) -> list[float | None]`: a function, a callable
instance (TRL's pattern for a reward with state, such as a pool), or a class, made with no arguments. Its metric
name is its `__name__` (a class's: the class name). Weight 0 logs it as a metric only.

Every plugged-in reward is checked on a few rows of the domain before anything starts (`check_reward`): importable
and callable, accepting what TRL passes (the rows' columns, `completion_ids`, `trainer_state`, `log_extra`,
`log_metric`), one float or None per completion, every value finite. During a run (`Guarded`) a reward that raises
stops it: the batch goes to runs/<run>/reward_failure.jsonl and the traceback to the log, with the reward's name and
the first sample it fails on; never a silent 0.
"""

import inspect
import json
import math
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from rewards.completions import completion_text
from selfplay.config import make_config
from selfplay.importing import entry_points, import_object


GROUP = "selfplay.rewards"
CHECK_ROWS = 4  # rows of the domain a reward is tried on before the run
CHECK_ANSWERS = ("", "42", "e4")  # completions tried on each: empty, a number, a move


class PluginError(ValueError):
    """A plugged-in reward cannot be used; the message names it and says what is wrong."""


class RewardError(RuntimeError):
    """A plugged-in reward raised during the run; the message names it and the sample."""


@dataclass
class PluggedReward:
    spec: str  # as given on the command line
    func: object  # the callable
    weight: float

    @property
    def name(self) -> str:
        return reward_name(self.func)


def reward_name(func) -> str:
    return getattr(func, "__name__", type(func).__name__)


def installed_rewards() -> dict[str, str]:
    """Entry points of the group `selfplay.rewards`: name -> "module:attribute"."""
    return entry_points(GROUP)


def load_reward(spec: str) -> PluggedReward:
    """`module:attribute[=weight]` or `entry-point-name[=weight]`; PluginError naming what is wrong."""
    target, sep, raw_weight = spec.rpartition("=") if "=" in spec else (spec, "", "")
    try:
        weight = float(raw_weight) if sep else 1.0
    except ValueError:
        raise PluginError(f"--reward {spec}: weight {raw_weight!r} is not a number") from None
    if not math.isfinite(weight):
        raise PluginError(f"--reward {spec}: weight {raw_weight!r} is not finite")
    if ":" not in target:
        entries = installed_rewards()
        if target not in entries:
            known = ", ".join(sorted(entries)) or "none installed"
            raise PluginError(f"--reward {target}: expected module:function or an installed reward ({known})")
        target = entries[target]
    try:
        func = import_object(target)
    except ValueError as error:
        raise PluginError(f"--reward {target}: {error}") from None
    attribute = target.partition(":")[2]
    if inspect.isclass(func):
        try:
            func = func()
        except Exception as error:
            raise PluginError(f"--reward {target}: {attribute}() failed ({type(error).__name__}: {error})") from None
    if not callable(func):
        raise PluginError(f"--reward {target}: {attribute} is a {type(func).__name__}, not callable")
    return PluggedReward(spec, func, weight)


def trl_arguments(rows: list[dict], completions: list) -> dict:
    """The keyword arguments TRL's GRPOTrainer gives a reward for these rows and completions (one per row)."""
    columns = {key: [row.get(key) for row in rows] for key in rows[0] if key != "prompt"}
    return {"prompts": [row["prompt"] for row in rows], "completions": completions,
            "completion_ids": [[] for _ in completions], **columns, "trainer_state": None,
            "log_extra": lambda *args, **kwargs: None, "log_metric": lambda *args, **kwargs: None}


def sample_completions(rows: list[dict]) -> tuple[list[dict], list]:
    """Each of the first CHECK_ROWS rows with each of CHECK_ANSWERS, as TRL gives them (chat or plain text)."""
    picked = [row for row in rows[:CHECK_ROWS] for _ in CHECK_ANSWERS]
    chat = isinstance(rows[0]["prompt"], list)
    answers = [[{"role": "assistant", "content": a}] if chat else a for _ in rows[:CHECK_ROWS] for a in CHECK_ANSWERS]
    return picked, answers


def check_reward(plugged: PluggedReward, rows: list[dict]) -> list:
    """Call the reward on sample rows as TRL would; PluginError naming it and what is wrong. Returns its values."""
    picked, completions = sample_completions(rows)
    arguments = trl_arguments(picked, completions)
    name = f"--reward {plugged.spec}"
    try:
        inspect.signature(plugged.func).bind(**arguments)
    except TypeError as error:
        given = ", ".join(k for k in arguments if k not in ("prompts", "completions"))
        raise PluginError(f"{name}: does not take what TRL passes it ({error}): prompts, completions and {given}; "
                          "add **kwargs") from None
    except ValueError:  # no signature to read (a builtin): the call below tells
        pass
    try:
        values = plugged.func(**arguments)
    except Exception as error:
        raise PluginError(f"{name}: raised {type(error).__name__}: {error} on the domain's sample rows") from None
    if not isinstance(values, (list, tuple)) or len(values) != len(completions):
        got = f"{len(values)} values" if isinstance(values, (list, tuple)) else f"a {type(values).__name__}"
        raise PluginError(f"{name}: returned {got} for {len(completions)} completions; return one float or None each")
    for value in values:
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PluginError(f"{name}: returned {value!r} ({type(value).__name__}); return a float or None")
        if not math.isfinite(value):
            raise PluginError(f"{name}: returned {value!r}; every reward must be finite (None: not scored)")
    return list(values)


class Guarded:
    """A plugged-in reward during the run: an exception stops the run (RewardError) after the batch is written to
    `failure_path` and the traceback, with the first failing sample, to the log. Name and signature unchanged."""

    def __init__(self, plugged: PluggedReward, failure_path: Path):
        self.func, self.failure_path = plugged.func, failure_path
        self.__name__ = plugged.name

    def __call__(self, prompts, completions, **kwargs):
        try:
            return self.func(prompts, completions, **kwargs)
        except Exception as error:
            step = getattr(kwargs.get("trainer_state"), "global_step", None)
            iteration = None if step is None else step + 1
            culprit = self._first_failing(prompts, completions, kwargs)
            print(f"reward {self.__name__} raised on sample {culprit} of iteration {iteration}:\n"
                  f"{traceback.format_exc()}", file=sys.stderr)  # the run's log (the terminal shows the error line)
            self._write_batch(prompts, completions, iteration, culprit, error)
            raise RewardError(f"reward {self.__name__} raised {type(error).__name__}: {error} (iteration {iteration}, "
                              f"sample {culprit}); the batch is in {self.failure_path}, the traceback in the log"
                              ) from error

    def _first_failing(self, prompts, completions, kwargs) -> int | None:
        """The index of the first completion the reward raises on alone, or None when each passes alone."""
        for i in range(len(completions)):
            one = {k: [v[i]] if isinstance(v, list) and len(v) == len(completions) else v for k, v in kwargs.items()}
            try:
                self.func([prompts[i]], [completions[i]], **one)
            except Exception:
                return i
        return None

    def _write_batch(self, prompts, completions, iteration, culprit, error) -> None:
        with open(self.failure_path, "a", encoding="utf-8") as out:
            for i, (prompt, completion) in enumerate(zip(prompts, completions)):
                out.write(json.dumps({"reward": self.__name__, "iteration": iteration, "sample": i,
                                      "failed_alone": i == culprit, "error": f"{type(error).__name__}: {error}",
                                      "prompt": prompt, "completion": completion_text(completion)}, default=str) + "\n")


def load_rewards(specs: list[str], rewards_only: bool, rows: list[dict]) -> list[PluggedReward]:
    """Every `--reward`, loaded and checked on the domain's `rows`, before anything starts."""
    plugged = [load_reward(spec) for spec in specs]
    names = [p.name for p in plugged]
    for p in plugged:
        if names.count(p.name) > 1:
            raise PluginError(f"--reward {p.spec}: two rewards are named {p.name!r}; rename one")
        check_reward(p, rows)
    if rewards_only and not any(p.weight for p in plugged):
        raise PluginError("--rewards-only: give at least one --reward with a weight other than 0")
    return plugged


def plug_in(plugged: list[PluggedReward], rewards_only: bool, funcs: list, weights: list[float],
            failure_path: Path) -> tuple[list, list[float]]:
    """The domain's rewards and weights with the plugged-in ones added, each guarded (with `rewards_only` the
    domain's keep weight 0: logged and evaluated, not trained on)."""
    for p in plugged:
        if p.name in [reward_name(f) for f in funcs]:
            raise PluginError(f"--reward {p.spec}: the domain has a reward named {p.name!r} already; rename yours")
    kept = [0.0] * len(weights) if rewards_only else list(weights)
    return [*funcs, *(Guarded(p, failure_path) for p in plugged)], [*kept, *(p.weight for p in plugged)]


def print_check(spec: str, domain_name: str, console) -> None:
    """`selfplay rewards check`: the reward on sample rows of the domain, one line per completion, then a verdict."""
    from rich.table import Table

    from selfplay.domains import get_domain

    domain = get_domain(domain_name)
    rows = domain.sample_rows(make_config(domain=domain_name), CHECK_ROWS)
    plugged = load_reward(spec)
    values = check_reward(plugged, rows)
    picked, completions = sample_completions(rows)
    table = Table(title=f"{plugged.name} on {domain_name} rows", title_justify="left", box=None)
    for header in ("row", "prompt (end)", "completion", "value"):
        table.add_column(header)
    for i, (row, completion, value) in enumerate(zip(picked, completions, values)):
        prompt = row["prompt"][-1]["content"] if isinstance(row["prompt"], list) else row["prompt"]
        table.add_row(str(i // len(CHECK_ANSWERS)), repr(prompt[-40:]), repr(completion_text(completion)),
                      "None" if value is None else f"{value:.4g}")
    console.print(table)
    console.print(f"ok: {plugged.name} takes what TRL passes and returns one finite float or None per completion "
                  f"(weight {plugged.weight:g})", highlight=False)
