"""Ctrl-C in a terminal stops a run after its current iteration; a second Ctrl-C stops it at once.

A terminal sends Ctrl-C's SIGINT to its whole foreground process group, and vLLM's engine processes shut down on it
(the loop's next generate would then wait forever). So in a terminal `selfplay loop` runs itself again in a process
group of its own (`run_shielded`): the terminal's SIGINT reaches only the first process, which passes it on to the
run's main process alone; vLLM's engine and Stockfish never see it. There `StopAfterIteration` turns the first SIGINT
into a request that the trainer stop once the iteration is done and saved (the run is then "interrupted" and
`--resume` continues it) and the second into KeyboardInterrupt. Without a terminal (a pipe, a script) SIGINT stops
the run at once, as before.
"""

import ctypes
import functools
import logging
import os
import signal
import subprocess
import sys
import termios

from transformers import TrainerCallback

log = logging.getLogger(__name__)

SHIELDED = "SELFPLAY_SHIELDED"  # set in the environment of the run's own process
PR_SET_PDEATHSIG = 1


def should_shield(command: str) -> bool:
    return command == "loop" and sys.stdin.isatty() and SHIELDED not in os.environ


def die_with_parent(parent: int) -> None:
    """In a child, before its exec: SIGTERM when the thread that started it ends (so when this process dies, even by
    kill -9, if a thread that lives as long as the child started it)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the prctl
        os._exit(1)


def run_shielded() -> int:
    """Run this same command line again in its own process group, pass SIGINT on to it, return its exit status."""
    child = subprocess.Popen(sys.orig_argv, env={**os.environ, SHIELDED: "1"}, process_group=0,
                             preexec_fn=functools.partial(die_with_parent, os.getpid()))
    signal.signal(signal.SIGINT, lambda signum, frame: child.send_signal(signal.SIGINT))
    echo = termios.tcgetattr(sys.stdin)
    quiet = echo[:3] + [echo[3] & ~termios.ECHOCTL] + echo[4:]  # no "^C" in the middle of the live dashboard
    termios.tcsetattr(sys.stdin, termios.TCSANOW, quiet)
    try:
        status = child.wait()
    finally:
        termios.tcsetattr(sys.stdin, termios.TCSANOW, echo)
    return 128 - status if status < 0 else status


def stop_on_sigterm() -> None:
    """In the run's own process: SIGTERM (its parent died, or `kill`) stops the run at once, closing vLLM."""
    if SHIELDED in os.environ:
        signal.signal(signal.SIGTERM, _stop_once)


def _stop_once(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # another one (it comes) must not cut vLLM's shutdown short
    raise KeyboardInterrupt


class StopAfterIteration(TrainerCallback):
    """While training, in the run's own process: the first SIGINT stops the trainer after the iteration it is in
    (`requested`), the second raises KeyboardInterrupt. Outside a terminal it changes nothing."""

    def __init__(self):
        self.requested, self.previous = False, None

    def __enter__(self):
        if SHIELDED in os.environ:
            self.previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def _on_sigint(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: the run stops once this iteration is saved (Ctrl-C again: at once)")

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_training_stop = True
