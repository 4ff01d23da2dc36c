"""The benches' own flags: a malformed one is one usage line (exit 2), before any model, engine or vLLM starts."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize("argv, message", [
    (["bench/sft_step.py", "--variants", "all-positions,bogus"], "--variants: unknown 'bogus'"),
    (["bench/sft_step.py", "--variants", "micro-batch-3"], "--variants: unknown 'micro-batch-3'"),
    (["bench/step_profile.py", "--micro-batch-size", "5"], "--micro-batch-size 5: it must divide"),
    (["bench/step_profile.py", "--micro-batch-size", "0"], "--micro-batch-size 0: it must divide"),
    (["bench/learning.py", "--paired", "no-such-run", "chess-default"], "--paired no-such-run chess-default: expected"),
    (["bench/update_parts.py", "--rounds", "0"], "--rounds 0: at least 1"),
    (["bench/update_growth.py", "--updates", "1"], "--updates 1: at least 2"),
])
def test_a_malformed_bench_flag_is_one_usage_error(argv, message):
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]


def eval_output(runs: Path, name: str, solved: list[float], sets: list[str]) -> None:
    """A `selfplay eval --out NAME` directory with one answer per row, scored `solved` (skill likewise)."""
    (runs / name).mkdir(parents=True)
    rows = [{"set": set_name, "id": i, "fen": f"fen {i}", "answers": ["e4"],
             "scores": {"skill": [value], "solve_reward": [value], "best_move_reward": [value],
                        "legal_move_reward": [1.0]}}
            for i, (set_name, value) in enumerate(zip(sets, solved))]
    (runs / name / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_two_eval_outputs_are_paired_position_by_position(tmp_path, monkeypatch):
    learning = load_bench("learning")
    monkeypatch.chdir(tmp_path)
    sets = ["mates"] * 4 + ["playouts"] * 2
    eval_output(tmp_path / "runs", "a", [1, 0, 0, 1, 0, 0], sets)
    eval_output(tmp_path / "runs", "b", [1, 1, 0, 1, 1, 1], sets)
    table = learning.paired_eval_table("a", "b")
    assert "| mates (4) | solved | 0.500 | 0.750 | +0.250 [" in table  # one of four positions gained
    assert "| playouts (2) | legal | 1.000 | 1.000 | +0.000 [+0.000, +0.000] |" in table
    eval_output(tmp_path / "runs", "c", [1, 0, 0, 1, 0, 0], ["mates"] * 6)  # other rows: no pairing
    with pytest.raises(SystemExit, match="scored different rows"):
        learning.paired_eval_table("a", "c")


def load_bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
