"""Rewards plugged in from outside the package (`--reward module:function[=weight]`): loaded, checked before anything
starts (one line and exit 2 for each kind of bad plug-in, nothing made), trained on and logged in a real tiny-model
run, and a reward that raises mid-run stops it with its name, the sample and the batch kept."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from selfplay import plugins
from selfplay.cli import main
from selfplay.plugins import Guarded, PluginError, RewardError, check_reward, load_reward, load_rewards, plug_in

EXAMPLES = Path(__file__).parent.parent / "examples"
ROWS = [{"prompt": [{"role": "user", "content": "2+2?"}], "answer": "4"},
        {"prompt": [{"role": "user", "content": "3+3?"}], "answer": "6"}]
MODULE = '''
def exact(prompts, completions, answer, **kwargs):
    return [float(c[0]["content"].strip() == a) for c, a in zip(completions, answer)]

def strict(prompts, completions, answer):
    return [0.0] * len(completions)

def one_value(prompts, completions, **kwargs):
    return [0.0]

def not_a_number(prompts, completions, **kwargs):
    return [float("nan")] * len(completions)

def text_values(prompts, completions, **kwargs):
    return ["high"] * len(completions)

class Calls:
    def __init__(self):
        self.calls = 0

    def __call__(self, prompts, completions, **kwargs):
        self.calls += 1
        return [None] * len(completions)

def fails_on_seven(prompts, completions, **kwargs):
    if any(c[0]["content"] == "7" for c in completions):
        raise KeyError("seven")
    return [1.0] * len(completions)

table = {"a": 1}
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_rewards.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)  # a module beside the user is found, as `python -m` finds it
    yield "user_rewards"
    sys.modules.pop("user_rewards", None)


def test_a_function_a_class_and_weights_load_with_their_metric_names(user_module):
    exact = load_reward("user_rewards:exact=0.25")
    assert (exact.name, exact.weight) == ("exact", 0.25)
    assert check_reward(exact, ROWS) == [0.0, 0.0, 0.0] * 2  # "", "42", "e4" against "4" and "6"
    calls = load_reward("user_rewards:Calls")
    assert (calls.name, calls.weight) == ("Calls", 1.0) and calls.func.calls == 0  # a class is made once
    check_reward(calls, ROWS)
    assert calls.func.calls == 1


def test_an_installed_entry_point_loads_by_name(user_module, monkeypatch):
    monkeypatch.setattr(plugins, "installed_rewards", lambda: {"exact-answer": "user_rewards:exact"})
    assert load_reward("exact-answer=2").func.__name__ == "exact"
    with pytest.raises(PluginError, match=r"installed reward \(exact-answer\)"):
        load_reward("other")


@pytest.mark.parametrize("spec, message", [
    ("no_such_module:exact", "cannot import no_such_module (ModuleNotFoundError"),
    ("user_rewards:missing", "user_rewards has no 'missing'"),
    ("user_rewards:table", "table is a dict, not callable"),
    ("user_rewards:exact=heavy", "weight 'heavy' is not a number"),
    ("user_rewards:exact=inf", "is not finite"),
    ("user_rewards:strict", "does not take what TRL passes it"),
    ("user_rewards:one_value", "returned 1 values for 6 completions"),
    ("user_rewards:not_a_number", "returned nan; every reward must be finite"),
    ("user_rewards:text_values", "returned 'high' (str); return a float or None"),
])
def test_each_bad_plug_in_gets_one_error_naming_it(user_module, spec, message):
    with pytest.raises(PluginError, match="--reward " + spec.split("=")[0]) as error:
        check_reward(load_reward(spec), ROWS)
    assert message in str(error.value)


def test_rewards_only_trains_on_the_plug_ins_and_keeps_the_domain_rewards_as_metrics(user_module):
    def domain_reward(prompts, completions, **kwargs):
        return [0.0] * len(completions)

    plugged = load_rewards(["user_rewards:exact=0.5"], False, ROWS)
    funcs, weights = plug_in(plugged, False, [domain_reward], [1.0], Path("unused"))
    assert [f.__name__ for f in funcs] == ["domain_reward", "exact"] and weights == [1.0, 0.5]
    funcs, weights = plug_in(plugged, True, [domain_reward], [1.0], Path("unused"))
    assert weights == [0.0, 0.5]
    with pytest.raises(PluginError, match="weight other than 0"):
        load_rewards(["user_rewards:exact=0"], True, ROWS)
    with pytest.raises(PluginError, match="already"):
        plug_in(load_rewards(["user_rewards:exact"], False, ROWS), False, [funcs[1]], [1.0], Path("unused"))


def test_a_reward_that_raises_mid_run_names_itself_and_the_sample_and_keeps_the_batch(user_module, tmp_path):
    guarded = Guarded(load_reward("user_rewards:fails_on_seven"), tmp_path / "reward_failure.jsonl")
    answers = [[{"role": "assistant", "content": t}] for t in ("5", "6", "7", "8")]
    prompts = [ROWS[0]["prompt"]] * 4
    assert guarded(prompts, answers[:2], trainer_state=SimpleNamespace(global_step=2)) == [1.0, 1.0]
    with pytest.raises(RewardError, match=r"fails_on_seven raised KeyError: 'seven' \(iteration 3, sample 2\)"):
        guarded(prompts, answers, trainer_state=SimpleNamespace(global_step=2))
    batch = [json.loads(line) for line in (tmp_path / "reward_failure.jsonl").read_text().splitlines()]
    assert [row["completion"] for row in batch] == ["5", "6", "7", "8"]
    assert [row["failed_alone"] for row in batch] == [False, False, True, False]


@pytest.mark.parametrize("spec, message", [
    ("no_such_module:exact", "cannot import no_such_module"),
    ("user_rewards:strict", "does not take what TRL passes it"),
    ("user_rewards:one_value", "returned 1 values for 12 completions"),
    ("user_rewards:not_a_number", "every reward must be finite"),
])
def test_a_bad_plug_in_stops_the_loop_before_anything_starts(user_module, capfd, tmp_path, spec, message):
    runs = tmp_path / "runs"
    status = main(["loop", "--runs-dir", str(runs), "--reward", spec])
    err = capfd.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not runs.exists()


def test_rewards_check_prints_each_value_and_the_verdict(capfd, monkeypatch):
    monkeypatch.chdir(EXAMPLES)
    assert main(["rewards", "check", "my_rewards:gives_check", "--domain", "chess"]) == 0
    out = capfd.readouterr().out
    assert "gives_check on chess rows" in out and "ok: gives_check" in out


def test_the_readme_reward_scores_a_check_and_only_a_check(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from my_rewards import gives_check

    fen = "4k3/8/8/8/8/8/8/R3K3 w - - 0 1"  # Ra8+ checks, Ra2 does not, Ra9 is no move
    assert gives_check(None, [[{"role": "assistant", "content": m}] for m in ("Ra8+", "Ra2", "Ra9")], [fen] * 3) == [
        1.0, 0.0, 0.0]


@pytest.mark.slow
def test_a_plugged_reward_is_logged_in_a_real_run_and_one_that_raises_stops_it(tiny_model, tmp_path):
    (tmp_path / "late.py").write_text(textwrap.dedent('''
        def raises_at_iteration_2(prompts, completions, trainer_state=None, **kwargs):
            if trainer_state is not None and trainer_state.global_step >= 1:
                raise RuntimeError("this reward broke")
            return [0.0] * len(completions)
    '''))
    (tmp_path / "my_rewards.py").write_text((EXAMPLES / "my_rewards.py").read_text())
    done = subprocess.run(
        [str(Path(sys.executable).with_name("selfplay")), "loop", "--model", tiny_model, "--runs-dir", "runs",
         "--run", "plugged", "--steps", "3", "--prompts-per-step", "2", "--num-generations", "4",
         "--micro-batch-size", "4", "--train-positions", "8", "--eval-positions", "2", "--eval-file", "random",
         "--engine-limit", "depth=4", "--warm-start", "0", "--reward", "my_rewards:gives_check=0.5",
         "--reward", "late:raises_at_iteration_2=0"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    run = tmp_path / "runs" / "plugged"
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith(
        "selfplay: RewardError: reward raises_at_iteration_2 raised RuntimeError: this reward broke (iteration 2, "
        "sample 0)")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1]
    assert "reward/gives_check" in metrics[0] and "reward/raises_at_iteration_2" in metrics[0]
    assert len((run / "reward_failure.jsonl").read_text().splitlines()) == 8  # the whole batch of iteration 2
    assert "reward raises_at_iteration_2 raised on sample 0 of iteration 2" in (run / "log.txt").read_text()
    assert json.loads((run / "status.json").read_text())["status"] == "crashed"
    assert json.loads((run / "config.json").read_text())["reward"] == ["my_rewards:gives_check=0.5",
                                                                        "late:raises_at_iteration_2=0"]
