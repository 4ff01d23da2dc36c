"""A domain from outside the package: examples/arithmetic, installed with pip (into a folder on the path, the venv
left as it is), found through its entry point by `selfplay domains` and `selfplay loop --domain arithmetic`, with its
own flags, and one real loop iteration on it (a tiny model, real vLLM and TRL)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent.parent / "examples" / "arithmetic"
SELFPLAY = str(Path(sys.executable).with_name("selfplay"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """The environment in which the example package is installed (pip, no dependencies, no network)."""
    target, source = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("source") / "arithmetic"
    shutil.copytree(EXAMPLE, source)  # pip builds in the source folder: keep the checkout clean
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True, timeout=300)
    return {**os.environ, "PYTHONPATH": str(target)}


def test_the_installed_domain_is_listed_with_its_flags(installed):
    listed = subprocess.run([SELFPLAY, "domains"], env=installed, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.split()[:1] == ["arithmetic"])
    assert "selfplay_arithmetic:Arithmetic" in row and "--problems" in listed.stdout
    helped = subprocess.run([SELFPLAY, "loop", "--domain", "arithmetic", "--help"], env=installed, capture_output=True,
                            text=True, timeout=120)
    assert "arithmetic domain:" in helped.stdout and "--max-number" in helped.stdout
    assert "--engine-limit" not in helped.stdout


def test_an_unknown_or_broken_domain_is_one_line(installed, tmp_path):
    (tmp_path / "not_a_domain.py").write_text("class Thing:\n    pass\n")
    (tmp_path / "half_a_domain.py").write_text(
        "from selfplay.domains import Domain\nclass Half(Domain):\n    name = 'half'\n    EVAL_METRICS = {'x': 'x'}\n")
    for name, message in (("poker", "unknown domain 'poker': choose one of chess, code, arithmetic"),
                          ("not_a_domain:Thing", "is not a subclass of selfplay.domains.Domain"),
                          ("half_a_domain:Half", "abstract methods eval_rows, rewards, train_rows"),
                          ("nowhere:Thing", "cannot import nowhere")):
        done = subprocess.run([SELFPLAY, "loop", "--domain", name], env=installed, capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_one_loop_iteration_on_the_installed_domain(installed, tiny_model, tmp_path):
    done = subprocess.run(
        [SELFPLAY, "loop", "--domain", "arithmetic", "--model", tiny_model, "--runs-dir", str(tmp_path), "--run", "a",
         "--steps", "1", "--prompts-per-step", "2", "--num-generations", "4", "--micro-batch-size", "4",
         "--problems", "8", "--eval-problems", "4", "--max-completion-length", "8", "--calculator"],
        env=installed, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [metrics] = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert metrics["iteration"] == 1 and "reward/exact_answer" in metrics
    settings = json.loads((tmp_path / "a" / "config.json").read_text())
    assert settings["domain"] == "arithmetic" and settings["problems"] == 8 and settings["calculator"] is True
    evaluation = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert evaluation["after"]["n"] == 4 and "exact_answer" in evaluation["after"]["scores"]


@pytest.mark.slow
def test_selfplay_eval_scores_the_installed_domain_on_a_jsonl_file(installed, tiny_model, tmp_path):
    rows = [{"prompt": [{"role": "user", "content": f"What is {a} + {a}? Answer: <number>"}], "answer": 2 * a}
            for a in range(1, 5)]
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    done = subprocess.run(
        [SELFPLAY, "eval", "arithmetic", "--model", tiny_model, "--file", str(tmp_path / "mine.jsonl"), "--samples",
         "3", "--temperature", "1.0", "--max-completion-length", "8", "--runs-dir", str(tmp_path), "--out", "ev"],
        env=installed, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())["result"]
    assert result["n"] == 4 and result["sets"]["mine"]["exact_answer"][0] == result["exact_answer"]
    assert set(result["pass_at_k"]) == {"pass@1", "pass@3"} and "pass@3" in done.stdout
    lines = (tmp_path / "ev" / "results.jsonl").read_text().splitlines()
    assert [len(json.loads(line)["answers"]) for line in lines] == [3, 3, 3, 3]


@pytest.mark.parametrize("line, message", [("not json", "mine.jsonl:2: not JSON"),
                                           ('{"answer": 3}', "mine.jsonl:2: expected an object with a prompt"),
                                           ('["a list"]', "mine.jsonl:2: expected an object with a prompt")])
def test_a_malformed_jsonl_row_file_is_one_line(installed, tmp_path, line, message):
    (tmp_path / "mine.jsonl").write_text('{"prompt": "1 + 1?", "answer": 2}\n' + line + "\n")
    done = subprocess.run([SELFPLAY, "eval", "arithmetic", "--file", str(tmp_path / "mine.jsonl"), "--runs-dir",
                           str(tmp_path / "runs")], env=installed, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
