"""Warm sandboxes kept between runs, each with our agent as its pid 1 (`sandboxes/agent.py`): what the bubblewrap
backend (as root) and the Docker backend share.

A run takes a warm sandbox made for its key (the part of its limits fixed when a sandbox starts), or starts one; it
sends the job and reads both streams back (`agent_client.Streams`); then the sandbox is checked. It goes back into
the pool only when its agent reported a clean reset, we did not kill it, it has served fewer than `max_runs` runs and
no more than `size` sandboxes wait idle; any other is ended, and the next run gets a new one. A sandbox idle for
nearly its agent's `TTL_S` is ended when taken (its agent is about to give up waiting), and one of another key than
the latest run's when that run takes its own. A run whose agent ended before running the program is tried again in
another sandbox, `ATTEMPTS` times in all.

    pool = AgentPool(start, size=2, max_runs=100, ahead=True)  # start(key) -> Warm; `ahead`: keep `size` ready
    sandbox = pool.take(key); ...; pool.give_back(sandbox, clean=True)
    pool.close()

A backend subclasses `AgentSandbox` and says how to start a sandbox, exchange a job with its agent and learn how
an agent that vanished ended.
"""

import logging
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping

from sandboxes import Limits, RunResult, Sandbox, SandboxError
from sandboxes.agent_client import ATTEMPTS, GRACE_S, TTL_S, Streams, job

log = logging.getLogger(__name__)


class Warm(ABC):
    """One started sandbox whose agent waits for jobs."""

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.last = time.monotonic()  # when it started, or finished its last run
        self.runs = 0

    @abstractmethod
    def end(self) -> None:
        """End the sandbox and every process in it (a no-op when it has ended); returns once they are gone."""


class AgentPool:
    """Warm sandboxes for the latest key, at most `size` idle. `start(key)` makes one (SandboxError when it cannot);
    with `ahead`, a background thread keeps `size` (idle or in a run) ready for the latest key, calling `on_thread`
    first (whatever must die with that thread: it lives as long as the pool)."""

    def __init__(self, start: Callable[[Hashable], Warm], *, size: int, max_runs: int, ahead: bool = False,
                 on_thread: Callable[[], None] | None = None, want: Hashable = None) -> None:
        self.start, self.size, self.max_runs = start, size, max_runs
        self.lock = threading.Condition()
        self.idle: list[Warm] = []
        self.busy = 0  # sandboxes of the wanted key in a run
        self.want = want
        self.closed = False
        self.refiller = None
        if ahead:
            started = threading.Event()
            self.refiller = threading.Thread(target=self.refill, args=(on_thread, started), name="sandbox-pool",
                                             daemon=True)
            self.refiller.start()
            started.wait()

    def take(self, key: Hashable) -> Warm:
        """An idle sandbox for `key` (the most recently used: its pages are warm), or a new one."""
        with self.lock:
            if self.closed:
                raise SandboxError("this sandbox is closed")
            stale = [warm for warm in self.idle if warm.key != key]
            self.idle = [warm for warm in self.idle if warm.key == key]
            if key != self.want:
                self.want, self.busy = key, 0  # runs of the old key end their sandboxes when they give them back
            taken = self.idle.pop() if self.idle else None
            self.busy += 1
            self.lock.notify_all()
        for warm in stale:
            warm.end()
        if taken is not None and time.monotonic() - taken.last > TTL_S - 60:
            taken.end()
            taken = None
        try:
            return taken or self.start(key)
        except BaseException:
            self.give_back(None, key=key)
            raise

    def give_back(self, warm: Warm | None, *, clean: bool = False, key: Hashable = None) -> None:
        """After a run: `warm` back among the idle if the run left it `clean` and there is room, else ended."""
        key = warm.key if warm is not None else key
        if warm is not None:
            warm.runs += 1
            warm.last = time.monotonic()
        with self.lock:
            keep = (warm is not None and clean and not self.closed and key == self.want and warm.runs < self.max_runs
                    and len(self.idle) < self.size)
            if key == self.want:
                self.busy -= 1
            if keep:
                self.idle.append(warm)
            self.lock.notify_all()
        if warm is not None and not keep:
            warm.end()

    def end_idle(self) -> None:
        """End the idle sandboxes (later runs start new ones)."""
        with self.lock:
            ending, self.idle = self.idle, []
        for warm in ending:
            warm.end()

    def close(self) -> None:
        """End the idle sandboxes and the refilling; later runs raise. Runs in flight end their own sandbox."""
        with self.lock:
            self.closed = True
            self.lock.notify_all()
        if self.refiller is not None:
            self.refiller.join()
        self.end_idle()

    def refill(self, on_thread: Callable[[], None] | None, started: threading.Event) -> None:
        """Background thread: keep `size` sandboxes, idle or in a run, for the wanted key."""
        try:
            if on_thread is not None:
                on_thread()
        finally:
            started.set()
        while True:
            with self.lock:
                while not self.closed and len(self.idle) + self.busy >= self.size:
                    self.lock.wait()
                if self.closed:
                    return
                want = self.want
            try:
                made = self.start(want)
            except SandboxError as error:  # runs then start their own, and raise if they cannot
                log.warning("sandbox pool: %s", error)
                with self.lock:
                    self.lock.wait(5)
                continue
            with self.lock:
                keep = not self.closed and want == self.want and len(self.idle) + self.busy < self.size
                if keep:
                    self.idle.append(made)
            if not keep:
                made.end()


class AgentSandbox(Sandbox):
    """A backend whose programs run through agents in pooled sandboxes (`self.pool`)."""

    name: str  # in messages: "bwrap", "Docker"
    gone: str  # what to say when an agent vanished mid-run
    pool: AgentPool

    @abstractmethod
    def exchange(self, warm: Warm, payload: bytes, streams: Streams, deadline: float) -> None:
        """Send the job, read both streams into `streams` until the agent's end of the run, a cap (or bytes after
        the end) or the deadline (`streams.killed`), or the end of both (the agent is gone)."""

    @abstractmethod
    def vanished(self, warm: Warm) -> tuple[int | None, bool]:
        """How a sandbox whose agent is gone mid-run ended: its exit status, and whether the OOM killer ended it."""

    def run_in_agent(self, argv: list[str], files: Mapping[str, str | bytes] | None, stdin: bytes, limits: Limits, *,
                     key: Hashable, rlimits: list, start_counts: bool) -> RunResult:
        """Run one program through an agent; the wall deadline counts the sandbox's start if `start_counts`."""
        job(argv, files, stdin, rlimits, "0" * 32, 0.0)  # ValueError before a sandbox is taken
        status = None
        for _ in range(ATTEMPTS):
            start = time.monotonic()
            warm = self.pool.take(key)
            start = start if start_counts else time.monotonic()
            nonce = secrets.token_hex(16)
            streams = Streams(nonce, limits)
            status, oom, clean = None, False, False
            try:
                payload = job(argv, files, stdin, rlimits, nonce, limits.wall_s - (time.monotonic() - start))
                self.exchange(warm, payload, streams, start + limits.wall_s + GRACE_S)
                if not streams.ended and streams.killed is None:
                    status, oom = self.vanished(warm)
                clean = streams.clean()
                if not clean and streams.killed is None:
                    log.info("%s sandbox replaced, its reset after a run left: %s", self.name, streams.reset_left())
            finally:
                self.pool.give_back(warm, clean=clean)
            if streams.ended or streams.killed or oom or streams.out or streams.err:
                return streams.result(status, oom, limits, wall_s=time.monotonic() - start,
                                      gone=self.gone)
        raise SandboxError(f"{self.name} sandboxes ended before running the program, {ATTEMPTS} times in a row "
                           f"(last exit {status})")
