"""Sandboxes for running untrusted model-written code: one interface, one backend per isolation technology.

    from sandboxes import Limits, get_sandbox

    sandbox = get_sandbox("auto")  # raises SandboxError, saying what to install, when no backend is usable
    result = sandbox.run(["python3", "main.py"], files={"main.py": "print(6 * 7)"}, limits=Limits(wall_s=5))
    result.ok, result.stdout, result.stopped  # True, "42\\n", "exit"

A run gets a fresh, private scratch directory (its cwd and $HOME) holding `files`, `stdin` as its standard input,
and `limits`; it returns a `RunResult`. A program that misbehaves (crashes, loops, floods, exhausts memory) is an
ordinary result, never an exception: `SandboxError` means the sandbox itself could not start.

Backends (each module's docstring says plainly what it does NOT protect against):
- `bwrap` (`sandboxes.bwrap.BwrapSandbox`): bubblewrap namespaces + rlimits, no daemon; the default. As root it
  reuses each sandbox for many runs through a trusted agent that resets it in between; otherwise a fresh one per run.
- `docker` (`sandboxes.docker.DockerSandbox`): warm containers from a pool, each reused the same way, under cgroups
  (memory, pids) + rlimits; needs a running dockerd and its image (`make sandbox-image`).
`close()` a sandbox (or use `with`) to end what it keeps between runs (idle agents, warm containers).

`get_sandbox("auto")` takes bwrap when it works here, else Docker.
"""

import signal
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Stop = Literal["exit", "timeout", "memory", "output", "signal"]


@dataclass(frozen=True)
class Limits:
    """What one run may use. Memory, CPU time, file size and open files are limits per process."""

    wall_s: float = 10.0
    """Wall-clock deadline for the whole run, sandbox start included; then every process of the run is killed."""
    cpu_s: float = 10.0
    """CPU seconds per process, rounded up to whole seconds (SIGXCPU at the limit, SIGKILL one second later)."""
    memory_bytes: int = 512 * 2**20
    """Address space per process (Docker: also the memory, swap included, of the whole run)."""
    processes: int = 64
    """Processes (and threads) alive at once inside the run (Docker: the container's pids cgroup)."""
    file_bytes: int = 16 * 2**20
    """Largest file a process may write."""
    open_files: int = 64
    """Open file descriptors per process."""
    output_bytes: int = 64 * 1024
    """Bytes kept of stdout and of stderr each; one byte more and the run is killed (stopped="output")."""
    scratch_bytes: int = 64 * 2**20
    """Size of the scratch directory (a tmpfs, shared by all the run's files)."""


@dataclass
class RunResult:
    """What happened to one run. Exactly one of `exit_code` and `signal` is set."""

    exit_code: int | None
    signal: int | None
    stdout: str
    """At most `Limits.output_bytes` bytes of it, decoded with errors="replace"; likewise `stderr`."""
    stderr: str
    wall_s: float
    cpu_s: float
    """User + system CPU time of the run's processes: all of them in Docker (its cgroup's), those that were waited for
    with bubblewrap (a child the kernel reaps, its parent ignoring SIGCHLD, is missed)."""
    stopped: Stop
    """Why it stopped: "exit" (on its own), "timeout" (wall or CPU limit), "memory", "output" (cap), "signal"."""

    @property
    def ok(self) -> bool:
        return self.stopped == "exit" and self.exit_code == 0


def finished(exit_code: int | None, sig: int | None, out: bytes, err: bytes, *, limits: Limits, wall_s: float,
             cpu_s: float, oom: bool = False) -> RunResult:
    """The result of a run that ended on its own (not killed by us): why it stopped, from its status, its CPU time,
    whether the memory cgroup OOM-killed in it (`oom`), and Python's `MemoryError` under RLIMIT_AS."""
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s >= limits.cpu_s and not oom):  # SIGKILL: hard limit
        stopped: Stop = "timeout"
    elif oom and (sig is not None or exit_code != 0):
        stopped = "memory"
    elif sig is not None:
        stopped = "signal"
    elif exit_code != 0 and err.rstrip().rsplit(b"\n", 1)[-1].startswith(b"MemoryError"):
        stopped = "memory"
    else:
        stopped = "exit"
    return RunResult(exit_code, sig, out.decode(errors="replace"), err.decode(errors="replace"), wall_s, cpu_s, stopped)


class SandboxError(RuntimeError):
    """The sandbox could not start (an infrastructure failure, never the program's fault); says what to do."""


class Sandbox(ABC):
    @abstractmethod
    def run(
        self,
        argv: list[str],
        *,
        files: Mapping[str, str | bytes] | None = None,
        stdin: bytes = b"",
        limits: Limits = Limits(),
    ) -> RunResult:
        """Run `argv` in a fresh sandbox whose cwd holds `files` (relative paths; str is written as UTF-8).
        `argv[0]` is looked up on the sandbox's PATH: "python3" is the system's python3."""

    def close(self) -> None:
        """Release what the backend holds between runs (Docker's warm containers); a no-op for most."""

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def get_sandbox(kind: str = "auto") -> Sandbox:
    """The backend named `kind` ("bwrap", "docker"), or for "auto" bwrap when it works here, else Docker; SandboxError
    saying what to install when it (or, for "auto", every backend) cannot work."""
    from sandboxes.bwrap import BwrapSandbox
    from sandboxes.docker import DockerSandbox

    backends = {"bwrap": BwrapSandbox, "docker": DockerSandbox}
    if kind == "auto":
        errors = []
        for name, backend in backends.items():
            try:
                return backend()
            except SandboxError as error:
                errors.append(f"- {name}: {error}")
        raise SandboxError("no sandbox backend is usable here. Install bubblewrap (apt-get install bubblewrap) or "
                           "Docker (apt-get install docker.io debootstrap, start dockerd, `make sandbox-image`):\n"
                           + "\n".join(errors))
    if kind not in backends:
        raise SandboxError(f"unknown sandbox {kind!r}: choose one of auto, {', '.join(backends)}")
    return backends[kind]()
