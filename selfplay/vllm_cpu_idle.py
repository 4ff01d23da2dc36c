"""A vLLM plugin that lets vLLM's processes on CPU go idle 10 ms after their last message instead of 1 s.

vLLM's engine core and its worker pass each step through shared memory, and a reader that read in the last second
(`SpinCondition.busy_loop_s`) polls it in a loop of `sched_yield` instead of sleeping on its socket. The loop
generates and trains in turn: when a generation ends, the worker spun for the next second on one of the box's two
cores while the trainer scored the answers and ran its update (a busy second read 0.99 s of the worker's CPU).
Between the steps of one generation messages come every few milliseconds, so a 10 ms window keeps the fast path
there. GPU machines keep vLLM's own setting (their cores are many).

vLLM loads `vllm.general_plugins` entry points in every process it starts, as for `selfplay.vllm_cpu_lora`.
"""

import logging

log = logging.getLogger(__name__)
IDLE_AFTER_S = 0.01


def register() -> None:
    """vLLM plugin entry point: every reader's busy window shortened, in this process, on CPU."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    try:
        from vllm.distributed.device_communicators.shm_broadcast import SpinCondition
    except ImportError as error:  # another vLLM: it may poll its own way; the loop still runs
        log.warning("vLLM's processes keep their own idle wait: %s", error)
        return
    if getattr(SpinCondition, "idle_after_s", None) is not None:  # registered already in this process
        return
    wait = SpinCondition.wait

    def wait_idle_soon(self, timeout_ms=None):
        self.busy_loop_s = min(self.busy_loop_s, IDLE_AFTER_S)  # readers made before the plugin loaded too
        return wait(self, timeout_ms)

    SpinCondition.wait = wait_idle_soon
    SpinCondition.idle_after_s = IDLE_AFTER_S
