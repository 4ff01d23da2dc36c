"""Where an iteration's seconds go: generation (prefill, decode), rewards, the update (forward, backward, optimizer),
the weight sync into vLLM, evaluations on the way, and everything else TRL does to prepare a batch.

Each part is timed where it runs and added into the loop's `stats` under `time/<part>_s`; `StepClock` starts the
count at the iteration's beginning, and the run's logger writes the parts beside the iteration's wall time
(`time/step_s`, from TRL's step begin to its log) and `time/unmeasured_s`, the wall time no part holds (gradient
clipping, the callbacks; tests/test_loop.py checks that it stays under 5%). The checkpoint written after each
iteration falls between iterations: `time/between_s` is the time from one iteration's log to the next one's start.
An in-process vLLM loads a new adapter when it next generates: that load counts in the next iteration's prefill.

    with timed(stats, "sync"):
        policy.load_adapter(path, version)
"""

import contextlib
import time

from transformers import TrainerCallback

PARTS = ("prefill", "decode", "rewards", "forward", "backward", "optimizer", "sync", "eval", "other")


def add(stats: dict, part: str, seconds: float) -> None:
    key = f"time/{part}_s"
    stats[key] = stats.get(key, 0.0) + seconds


def measured(stats: dict) -> float:
    return sum(stats.get(f"time/{part}_s", 0.0) for part in PARTS)


@contextlib.contextmanager
def timed(stats: dict, part: str):
    """Add the block's seconds to `part`, less what parts timed inside it took (they keep their own)."""
    before, start = measured(stats), time.perf_counter()
    try:
        yield
    finally:
        add(stats, part, time.perf_counter() - start - (measured(stats) - before))


def finish(stats: dict) -> dict:
    """The iteration so far: its wall time `time/step_s`, its parts (each of PARTS, 0 where it did not run),
    `time/unmeasured_s` (what no part holds) and `time/between_s` (since the last iteration's log; None at first)."""
    if "time/step_start" not in stats:
        return {}
    wall = time.perf_counter() - stats["time/step_start"]
    parts = {f"time/{part}_s": stats.get(f"time/{part}_s", 0.0) for part in PARTS}
    return {"time/step_s": wall, **parts, "time/unmeasured_s": wall - sum(parts.values()),
            "time/between_s": stats.get("time/between_s")}


class StepClock(TrainerCallback):
    """Clears the parts at each iteration's start, and times the optimizer step."""

    def __init__(self, stats: dict):
        self.stats = stats
        self.last_log: float | None = None
        self.optimizer_start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        now = time.perf_counter()
        for key in [k for k in self.stats if k.startswith("time/")]:
            del self.stats[key]
        self.stats["time/step_start"] = now
        if self.last_log is not None:
            self.stats["time/between_s"] = now - self.last_log

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.optimizer_start = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kwargs):
        add(self.stats, "optimizer", time.perf_counter() - self.optimizer_start)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.last_log = time.perf_counter()
