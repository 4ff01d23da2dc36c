"""The benches' own flags: a malformed one is one usage line (exit 2), before any model, engine or vLLM starts."""

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
])
def test_a_malformed_bench_flag_is_one_usage_error(argv, message):
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
