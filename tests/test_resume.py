"""Resume: a tiny-model run killed with SIGKILL at random points (the whole process group, vLLM's engine
included), stopped with Ctrl-C in a terminal (a pseudo-terminal: once, the run finishes its iteration; twice, at once)
or with SIGINT to its process group outside one (at once), then `selfplay loop --resume`, against an uninterrupted run
of the same seed: the same iterations, each once, and the same final adapter. vLLM samples with per-request seeds and TRL
trains in one CPU process, so the whole run is deterministic here; the adapters are compared to 1e-5."""

import json
import os
import pty
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from dense_domain import DENSE
from safetensors.torch import load_file

STEPS = 4
SELFPLAY = str(Path(sys.executable).with_name("selfplay"))
# the test domain (dense_domain:DenseChess); faulthandler: a run that hangs is sent SIGABRT and its threads' stacks
# land in its log.txt (stderr is redirected there), which the failure then shows
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "PYTHONFAULTHANDLER": "1"}


def start(runs: Path, *argv: str) -> subprocess.Popen:
    # SIGINT as a shell's foreground job has it: a test run started in the background (`pytest &`, nohup) passes it
    # on ignored, and the run would then ignore the Ctrl-C of its test while vLLM's engine, which sets its own
    # handler, stops on it: the run then waited forever for the engine's next output
    return subprocess.Popen([SELFPLAY, "loop", "--runs-dir", str(runs), *argv], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def fresh(tiny_model: str, runs: Path, name: str) -> subprocess.Popen:
    return start(runs, "--domain", DENSE, "--run", name, "--model", tiny_model, "--steps", str(STEPS), "--prompts-per-step", "2",
                 "--num-generations", "4", "--micro-batch-size", "4", "--train-positions", "8", "--eval-positions",
                 "2", "--eval-file", "random", "--engine-limit", "depth=4", "--warm-start", "0", "--learning-rate",
                 "0.05")


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGABRT)  # faulthandler writes every thread's stack into the run's log.txt
        time.sleep(3)
        os.killpg(process.pid, signal.SIGKILL)
        args = process.args
        name = args[args.index("--run") + 1] if "--run" in args else args[args.index("--resume") + 1]
        log = Path(args[args.index("--runs-dir") + 1]) / name / "log.txt"
        stacks = log.read_text(errors="replace")[-6000:] if log.exists() else "(no log.txt)"
        raise AssertionError(f"the run did not end within {timeout} s; the end of its log:\n{stacks}") from None
    return process.returncode, out, err


def iterations_done(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def wait_for_iteration(process: subprocess.Popen, run_dir: Path, k: int) -> None:
    deadline = time.time() + 300
    while iterations_done(run_dir) < k:
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.time() < deadline
        time.sleep(0.05)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def adapter(run_dir: Path) -> dict:
    return load_file(run_dir / "adapters" / "final" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    status, _, err = finish(fresh(tiny_model, runs, "whole"))
    assert status == 0, err[-2000:]
    return runs / "whole"


def check_same_as(reference: Path, run_dir: Path) -> None:
    assert [m["iteration"] for m in jsonl(run_dir / "metrics.jsonl")] == list(range(1, STEPS + 1))
    samples, whole = jsonl(run_dir / "samples.jsonl"), jsonl(reference / "samples.jsonl")
    assert [s["iteration"] for s in samples] == [s["iteration"] for s in whole]
    assert [s["completion"] for s in samples] == [s["completion"] for s in whole]  # seeded sampling resumes too
    assert [e["label"] for e in jsonl(run_dir / "eval.jsonl")] == ["before", "after"]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    resumed, uninterrupted = adapter(run_dir), adapter(reference)
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, atol=1e-5, rtol=1e-4)
    assert any(t.abs().sum() > 0 for n, t in uninterrupted.items() if "lora_B" in n)  # training moved the adapter


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [1, STEPS - 1])  # in an early iteration, and in the last one or its eval
def test_a_run_killed_at_a_random_point_resumes_to_the_same_result(tiny_model, reference, tmp_path, kill_after):
    rng = random.Random(kill_after)
    process = fresh(tiny_model, tmp_path, "killed")
    wait_for_iteration(process, tmp_path / "killed", kill_after)
    time.sleep(rng.uniform(0.0, 1.0))  # anywhere in the next iteration: generating, scoring, training, saving
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    status, out, err = finish(start(tmp_path, "--resume", "killed"))
    assert status == 0, err[-2000:]
    check_same_as(reference, tmp_path / "killed")


@pytest.mark.slow
def test_ctrl_c_without_a_terminal_stops_the_run_as_interrupted_and_says_how_to_resume(tiny_model, tmp_path):
    """A run in a pipe or under nohup gets Ctrl-C as SIGINT to its group; resuming after it: the terminal test."""
    process = fresh(tiny_model, tmp_path, "stopped")
    wait_for_iteration(process, tmp_path / "stopped", 1)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the whole foreground process group
    status, out, err = finish(process, timeout=120)
    assert status == 130, err[-2000:]
    assert "--resume stopped" in out
    run_dir = tmp_path / "stopped"
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
    assert 1 <= iterations_done(run_dir) < STEPS


def start_in_a_terminal(tiny_model: str, runs: Path, name: str) -> tuple[int, int, list[bytes]]:
    """`fresh` in a pseudo-terminal of its own (its controlling terminal: ^C written to it is the terminal's Ctrl-C).
    Returns the pid, the terminal's fd and the output read so far (drained by a thread so the run never blocks)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once
        os.execve(SELFPLAY, [SELFPLAY, "loop", "--domain", DENSE, "--runs-dir", str(runs), "--run", name,
                             "--model", tiny_model, "--steps", str(STEPS), "--prompts-per-step", "2",
                             "--num-generations", "4", "--micro-batch-size", "4", "--train-positions", "8",
                             "--eval-positions", "2", "--eval-file", "random", "--engine-limit", "depth=4",
                             "--warm-start", "0", "--learning-rate", "0.05"], ENV)
    output: list[bytes] = []

    def drain():
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            output.append(chunk)

    threading.Thread(target=drain, daemon=True).start()
    return pid, fd, output


def wait_exit(pid: int, timeout: float = 300) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"the run did not stop within {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_in_a_terminal_finishes_the_iteration_or_twice_stops_at_once(tiny_model, reference, tmp_path, presses):
    run_dir = tmp_path / "pressed"
    pid, fd, output = start_in_a_terminal(tiny_model, tmp_path, "pressed")
    deadline = time.time() + 300
    while iterations_done(run_dir) < 1:
        assert time.time() < deadline, b"".join(output)[-2000:]
        time.sleep(0.02)
    pressed_at = iterations_done(run_dir)
    for _ in range(presses):
        os.write(fd, b"\x03")  # Ctrl-C, through the terminal's line discipline: SIGINT to its foreground group
        time.sleep(0.05)
    assert wait_exit(pid) == 130, b"".join(output)[-2000:]
    os.close(fd)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
    stopped_at = iterations_done(run_dir)
    assert stopped_at < STEPS
    if presses == 1:  # the iteration under way when Ctrl-C came was finished and saved
        assert pressed_at + 1 <= stopped_at <= pressed_at + 2
        assert (run_dir / "trainer" / f"checkpoint-{stopped_at}").is_dir()
        assert b"stops once this iteration is saved" in b"".join(output)
    status, out, err = finish(start(tmp_path, "--resume", "pressed"))
    assert status == 0, err[-2000:]
    assert f"resume from iteration {stopped_at}" in out or presses == 2
    check_same_as(reference, run_dir)


@pytest.mark.slow
def test_resuming_a_broken_or_foreign_run_dir_is_one_clear_error(reference, tmp_path, capfd):
    from selfplay.cli import main

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"domain": "chess", "steps"')
    assert main(["loop", "--runs-dir", str(tmp_path), "--resume", "broken"]) == 2
    assert "config.json: not valid JSON" in capfd.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    settings = json.loads((reference / "config.json").read_text())
    (foreign / "config.json").write_text(json.dumps({**settings, "flux_capacitor": 3}))
    assert main(["loop", "--runs-dir", str(tmp_path), "--resume", "foreign"]) == 2
    assert "flux_capacitor are unknown to this version" in capfd.readouterr().err
