"""`selfplay loop` as a user runs it, through a pipe (a tiny random model, real vLLM, TRL and Stockfish): only our lines
on the terminal, third-party output in log.txt. Then `selfplay runs` on that run dir and on corrupted copies of it."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selfplay.cli import main


@pytest.fixture(scope="module")
def piped_run(tiny_model, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    done = subprocess.run(
        [str(Path(sys.executable).with_name("selfplay")), "loop", "--model", tiny_model, "--runs-dir", str(runs),
         "--run", "tiny-a", "--steps", "2", "--prompts-per-step", "2", "--num-generations", "4",
         "--micro-batch-size", "4", "--train-positions", "8", "--eval-positions", "4", "--eval-file", "random",
         "--engine-limit", "depth=4", "--warm-start", "0", "--learning-rate", "0.05",
         "--report-to", "tensorboard,wandb", "--games", "2"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return runs, done


@pytest.mark.slow
def test_only_our_lines_reach_the_terminal(piped_run):
    runs, done = piped_run
    lines = done.stdout.splitlines()
    assert done.stderr == ""
    assert len(lines) <= 40, done.stdout
    for noise in ("vLLM", "vllm", "Warning", "WARNING", "INFO", "Triton", "NUMA", "it/s]"):
        assert noise not in done.stdout, f"third-party output on the terminal: {noise!r}"
    for header in ("run", "model", "device", "rewards", "log"):
        assert any(line.split()[0] == header for line in lines if line.strip())
    assert [line.split()[1] for line in lines if line.startswith("iteration ")] == ["1/2", "2/2"]  # one line each
    log = (runs / "tiny-a" / "log.txt").read_text()
    assert "EngineCore" in log or "vllm" in log.lower()  # vLLM's own process wrote there
    assert json.loads((runs / "tiny-a" / "status.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_trackers_write_into_the_run_dir_without_a_network(piped_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = piped_run[0] / "tiny-a"
    events = EventAccumulator(str(next((run / "tensorboard").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    assert any("reward" in tag for tag in events.Tags()["scalars"])
    assert list((run / "wandb").glob("offline-run-*"))  # W&B offline mode: no login, no network


@pytest.mark.slow
def test_games_after_training_are_played_scored_and_kept_as_pgn(piped_run):
    import chess.pgn

    runs, done = piped_run
    match = json.loads((runs / "tiny-a" / "eval.json").read_text())["matches"][0]
    assert match["opponent_elo"] == 1350 and match["wins"] + match["draws"] + match["losses"] == 2
    with open(runs / "tiny-a" / "games.pgn") as pgn:
        games = [chess.pgn.read_game(pgn), chess.pgn.read_game(pgn)]
    assert [game.headers["White"] == "policy" for game in games] == [True, False]  # the colours alternate
    assert [game.headers["Result"] for game in games].count("1/2-1/2") == match["draws"]
    assert "stockfish-elo-1350: " in done.stdout and "Elo " in done.stdout


def run_cli(capfd, *argv) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capfd.readouterr()
    return status, captured.out, captured.err


def digest(path: Path) -> dict:
    return {p.relative_to(path): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def runs_dir(piped_run, tmp_path_factory):
    """The real run, a copy with other settings, and corrupted copies."""
    runs = tmp_path_factory.mktemp("listed")
    shutil.copytree(piped_run[0] / "tiny-a", runs / "tiny-a", ignore=shutil.ignore_patterns("adapters", "trainer"))
    shutil.copytree(runs / "tiny-a", runs / "tiny-b")
    config = json.loads((runs / "tiny-b" / "config.json").read_text())
    (runs / "tiny-b" / "config.json").write_text(json.dumps({**config, "seed": 7, "temperature": 1.0}))
    samples = [json.loads(line) for line in (runs / "tiny-b" / "samples.jsonl").read_text().splitlines()]
    for i, sample in enumerate(samples):  # the random model scores 0 everywhere: spread the advantages to order them
        sample["advantage"] = ((i * 7) % 5 - 2) / 2
    (runs / "tiny-b" / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    shutil.copytree(runs / "tiny-a", runs / "solo-run")
    shutil.copytree(runs / "tiny-a", runs / "cut")
    metrics = (runs / "cut" / "metrics.jsonl").read_text()
    (runs / "cut" / "metrics.jsonl").write_text(metrics[: len(metrics) - 40])  # the last line cut short
    shutil.copytree(runs / "tiny-a", runs / "headless")
    (runs / "headless" / "config.json").unlink()
    return runs


@pytest.mark.slow
def test_list_shows_each_run_with_progress_held_out_and_status(runs_dir, capfd):
    status, out, _ = run_cli(capfd, "runs", "list", "--runs-dir", str(runs_dir))
    assert status == 0
    row = next(line for line in out.splitlines() if line.startswith("tiny-a "))
    assert "chess" in row and "2/2" in row and "finished" in row and "skill" in row and "->" in row
    cut = next(line for line in out.splitlines() if line.startswith("cut "))
    assert "unreadable" in cut


@pytest.mark.slow
def test_show_gives_changed_settings_curves_and_the_evaluation(runs_dir, capfd):
    status, out, _ = run_cli(capfd, "runs", "show", "tiny-a", "--runs-dir", str(runs_dir))
    assert status == 0
    assert "steps=2" in out and "warm_start=0" in out and "temperature" not in out  # only what differs
    assert "reward" in out and any(bar in out for bar in "▁▂▃▄▅▆▇█")
    assert "held-out before -> after" in out and "skill" in out


@pytest.mark.slow
def test_samples_filters_and_orders(runs_dir, capfd):
    for order in ("--best", "--worst"):
        status, out, _ = run_cli(capfd, "runs", "samples", "tiny-b", "--iteration", "2", order, "--runs-dir",
                                 str(runs_dir))
        assert status == 0
        rows = [line.split() for line in out.splitlines()[1:] if line.split() and line.split()[0].isdigit()
                and "shown" not in line]
        assert len(rows) == 8 and {r[0] for r in rows} == {"2"}
        advantages = [float(r[1]) for r in rows]
        assert advantages == sorted(advantages, reverse=order == "--best") and len(set(advantages)) > 1
    status, out, _ = run_cli(capfd, "runs", "samples", "tiny-a", "--grep", "no such text anywhere", "--runs-dir",
                             str(runs_dir))
    assert "no samples match" in out


@pytest.mark.slow
def test_compare_lists_only_the_settings_that_differ(runs_dir, capfd):
    status, out, _ = run_cli(capfd, "runs", "compare", "tiny-a", "tiny-b", "--runs-dir", str(runs_dir))
    assert status == 0
    assert "seed" in out and "temperature" in out and "steps " not in out
    assert "held-out after" in out


@pytest.mark.slow
def test_plot_writes_a_png_and_tail_replays_a_finished_run(runs_dir, tmp_path, capfd):
    out_png = tmp_path / "curves.png"
    status, _, _ = run_cli(capfd, "runs", "plot", "tiny-a", "tiny-b", "--out", str(out_png), "--runs-dir",
                           str(runs_dir))
    assert status == 0 and out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    status, out, _ = run_cli(capfd, "runs", "tail", "tiny-a", "--runs-dir", str(runs_dir))
    assert status == 0 and "iteration 1/2" in out and "iteration 2/2" in out and "finished" in out


@pytest.mark.slow
def test_prefixes_and_broken_run_dirs_get_one_clear_error_and_change_nothing(runs_dir, capfd):
    before = digest(runs_dir)
    status, out, _ = run_cli(capfd, "runs", "show", "sol", "--runs-dir", str(runs_dir))  # a unique prefix
    assert status == 0 and "solo-run" in out
    status, _, err = run_cli(capfd, "runs", "show", "tiny", "--runs-dir", str(runs_dir))
    assert status == 2 and "ambiguous" in err and "tiny-a" in err and "tiny-b" in err
    status, out, _ = run_cli(capfd, "runs", "show", "tiny-b", "--runs-dir", str(runs_dir))
    assert status == 0 and "tiny-b" in out
    status, _, err = run_cli(capfd, "runs", "show", "cu", "--runs-dir", str(runs_dir))
    assert status == 2 and "metrics.jsonl:2" in err and err.count("\n") == 1
    status, _, err = run_cli(capfd, "runs", "show", "headless", "--runs-dir", str(runs_dir))
    assert status == 2 and "config.json is missing" in err and err.count("\n") == 1
    status, _, err = run_cli(capfd, "runs", "show", "zzz", "--runs-dir", str(runs_dir))
    assert status == 2 and "no run 'zzz'" in err
    assert digest(runs_dir) == before
