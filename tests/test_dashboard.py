"""The live dashboard in a pseudo-terminal (real rich, output read back from the pty), its plain lines through a pipe,
its warnings, and the third-party output kept off the terminal."""

import io
import logging
import os
import pty
import re
import select
import subprocess
import sys

from rich.console import Console

from selfplay.dashboard import Dashboard, sparkline
from selfplay.terminal import ThirdPartyOutput

HEADLINE = "reward/legal_move_reward"
WEIGHTS = {"engine_reward": 1.0, "legal_move_reward": 0.0}


def metrics(iteration: int, reward: float, zero_spread: float = 0.25) -> dict:
    return {"iteration": iteration, "reward/mean": reward, HEADLINE: reward / 2, "reward/zero_std_frac": zero_spread,
            "train/kl": 0.001, "train/loss": 0.01, "gen/tokens_per_s": 300.0, "reward/evals_per_s": 90.0,
            "time/step_s": 9.5, "time/prefill_s": 0.4, "time/decode_s": 1.2, "time/rewards_s": 0.8,
            "time/forward_s": 2.5, "time/backward_s": 3.5, "time/optimizer_s": 0.2, "time/sync_s": 0.5,
            "time/eval_s": 0.0, "time/other_s": 0.4}


def group(answers: list[str]) -> list[dict]:
    return [{"completion": a, "advantage": 1.0 - i / 4, "rewards": {"engine_reward": 0.9 - i / 10,
                                                                    "legal_move_reward": 1.0}}
            for i, a in enumerate(answers)]


def read_pty(master: int) -> str:
    chunks = []
    while select.select([master], [], [], 0.5)[0]:
        chunks.append(os.read(master, 65536))
    return b"".join(chunks).decode(errors="replace")


def test_every_panel_shows_in_a_pseudo_terminal():
    master, slave = pty.openpty()
    terminal = os.fdopen(slave, "w")
    console = Console(file=terminal, width=120)
    assert console.is_terminal
    with Dashboard(4, headline=HEADLINE, weights=WEIGHTS, console=console) as dashboard:
        for i in range(1, 4):
            dashboard.update(metrics(i, 0.2 * i, zero_spread=1.0), group(["Nf3", "e4", "Qxd8+", "a3"]))
        logging.getLogger("selfplay.policy").warning("vLLM generation failed (test); restarting the engine")
    screen = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", read_pty(master))
    terminal.close()
    os.close(master)
    assert "iteration" in screen and "3/4" in screen  # progress
    assert "ETA" in screen or "-:--:--" in screen
    for header in ("reward", "legal_move", "zero-spread", "KL", "loss", "tok/s", "rewards/s"):
        assert header in screen
    assert any(bar in screen for bar in "▁▂▃▄▅▆▇█")  # sparklines
    assert "last group" in screen
    assert re.search(r"best reward 0\.900 advantage \+1\.00  Nf3", screen)  # the weighted reward, not the sum
    assert re.search(r"worst reward 0\.600 advantage \+0\.25  a3", screen)
    assert "warnings" in screen and "no learning signal" in screen  # 3 iterations at zero spread
    assert "restarting the engine" in screen  # our WARNING log records land in the panel
    assert "step seconds prefill 0.4  decode 1.2  rewards 0.8  forward 2.5  backward 3.5  optimizer 0.2  sync 0.5  " \
           "other 0.4" in screen  # where the last iteration's seconds went; a part that took none is left out


def test_a_pipe_gets_one_plain_line_per_iteration():
    out = io.StringIO()
    console = Console(file=out, width=120)
    with Dashboard(2, headline=HEADLINE, weights=WEIGHTS, console=console) as dashboard:
        dashboard.update(metrics(1, 0.5), group(["a", "b", "c", "d"]))
        assert out.getvalue().count("\n") == 1  # written at once, not at the end
        dashboard.update(metrics(2, 0.6), group(["a", "b", "c", "d"]))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("iteration 1/2  reward 0.500  legal_move 0.250")
    assert lines[1].startswith("iteration 2/2")
    assert lines[1].endswith("(prefill 0.4  decode 1.2  rewards 0.8  forward 2.5  backward 3.5  optimizer 0.2  sync 0.5  "
                             "other 0.4)")
    assert "\x1b[" not in out.getvalue()


def test_collapse_and_divergence_warnings():
    out = io.StringIO()
    with Dashboard(3, headline=HEADLINE, weights=WEIGHTS, console=Console(file=out, width=200)) as dashboard:
        dashboard.evaluated("before", 0.30)
        dashboard.update(metrics(1, 0.2), group(["e4", "d4", "c4", "Nf3"]))
        assert "warning" not in out.getvalue()
        dashboard.update(metrics(2, 0.8), group(["e4", "e4", "e4", "Nf3"]))  # one answer, 3 of 4 samples
        assert "collapse at iteration 2: 'e4' is 3 of 4 samples" in out.getvalue()
        dashboard.evaluated("iteration 2", 0.20)  # training reward went up, the held-out figure went down
    assert "training reward rising while held-out legal_move fell: 0.300 (before) -> 0.200 (iteration 2)" in (
        out.getvalue())


def test_sparkline_spans_low_to_high():
    assert sparkline([0.0, 0.5, 1.0]) == "▁▅█"
    assert sparkline([None, 2.0, 2.0]) == "▁▁"
    assert sparkline([]) == ""


def test_third_party_output_goes_to_the_log_and_ours_to_the_terminal(tmp_path, capfd):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with ThirdPartyOutput() as output:
        print("third-party print before the run dir")
        output.console.print("our line")
        output.move_into(run_dir)
        os.write(2, b"C-level stderr\n")
        subprocess.run([sys.executable, "-c", "import warnings; warnings.warn('a child warning')"], check=True)
        logging.getLogger("selfplay.test").info("our own log record")
    captured = capfd.readouterr()
    assert "our line" in captured.out and "our own log record" in captured.out
    for text in ("third-party print", "C-level stderr", "a child warning"):
        assert text not in captured.out + captured.err
    log = (run_dir / "log.txt").read_text()
    for text in ("third-party print before the run dir", "C-level stderr", "a child warning"):
        assert text in log
    assert not output_temp_logs()


def test_verbose_shows_third_party_output_too(tmp_path, capfd):
    with ThirdPartyOutput(verbose=True) as output:
        os.write(1, b"vllm says hello\n")
        output.move_into(tmp_path)
    assert "vllm says hello" in capfd.readouterr().out
    assert "vllm says hello" in (tmp_path / "log.txt").read_text()


def test_the_temporary_log_of_a_command_that_made_no_run_is_removed(capfd):
    with ThirdPartyOutput():
        print("config check noise")
    assert not output_temp_logs()


def output_temp_logs():
    import tempfile
    from pathlib import Path

    return list(Path(tempfile.gettempdir()).glob(f"selfplay-{os.getpid()}.log"))
