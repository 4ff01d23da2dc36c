"""Our side of the agent protocol (`sandboxes/agent.py`), shared by the sandboxes that reuse one sandbox for many
runs (Docker, and bubblewrap as root): the job we send, the two streams we read back until the agent's end markers,
and the result they make.

A run's verdict comes only from the agent's trailer, which a program cannot forge: it carries a fresh random nonce
the program never sees, and the agent writes it after every process of the run is dead.
"""

import json
import math
import re
import signal
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from sandboxes import Limits, RunResult, SandboxError, Stop, finished

AGENT_PATH = Path(__file__).parent / "agent.py"
SCRATCH = "/tmp"
ENV = {"PATH": "/usr/bin:/bin", "HOME": SCRATCH, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
AGENT_CAPS = ["SETUID", "SETGID", "SETPCAP", "KILL", "DAC_OVERRIDE", "FOWNER", "CHOWN"]
TRAILER = re.compile(
    rb"\0sandbox: end ([0-9a-f]{32}) status=(\d+) cpu=(\d+\.\d+) oom=(\d+) timeout=([01]) reset=(\w{1,30})\n\Z")
TRAILER_MAX = 160  # bytes: the longest trailer the agent writes
TTL_S = 1800  # a warm agent that gets no job in this time exits
GRACE_S = 5  # past the deadline, a run whose agent has not reported is killed with its sandbox
ATTEMPTS = 3  # tries to get a run through an agent before SandboxError
# Set in a reused sandbox's namespaces, so that a run leaves nothing there for the next: no SysV shared memory,
# semaphores or message queues, no POSIX message queue, no TCP socket in TIME_WAIT (which would hold its port), no
# TCP metrics or Fast Open cookies kept per peer, no MPTCP (its path manager keeps endpoints). Those this kernel has.
SANDBOX_SYSCTLS = {key: value for key, value in {
    "kernel.shmmni": "0", "kernel.msgmni": "0", "kernel.sem": "0 0 0 0", "fs.mqueue.queues_max": "0",
    "net.ipv4.tcp_max_tw_buckets": "0", "net.ipv4.tcp_no_metrics_save": "1", "net.ipv4.tcp_fastopen": "0",
    "net.mptcp.enabled": "0",
}.items() if Path("/proc/sys", *key.split(".")).exists()}


def rlimits(limits: Limits, *, processes: bool) -> list[tuple[str, int, int]]:
    """(resource, soft, hard) for the program; RLIMIT_NPROC only where `processes` (a user namespace of its own)."""
    cpu = max(1, math.ceil(limits.cpu_s))
    limit = [("RLIMIT_CPU", cpu, cpu + 1), ("RLIMIT_AS", limits.memory_bytes, limits.memory_bytes),
             ("RLIMIT_FSIZE", limits.file_bytes, limits.file_bytes),
             ("RLIMIT_NOFILE", limits.open_files, limits.open_files), ("RLIMIT_CORE", 0, 0)]
    return limit + [("RLIMIT_NPROC", limits.processes, limits.processes)] if processes else limit


def job(argv: list[str], files: Mapping[str, str | bytes] | None, stdin: bytes, rlimit: list, nonce: str,
        wall_s: float) -> bytes:
    """What the agent reads on its stdin for one run; ValueError for an argv that is not strings without NUL (a C
    string would end there) or a file name that leaves the scratch dir."""
    if not argv or not all(isinstance(arg, str) and "\0" not in arg for arg in argv):
        raise ValueError(f"argv must be a non-empty list of strings without NUL bytes: {argv!r}")
    contents = []
    for name, content in (files or {}).items():
        if not isinstance(name, str) or "\0" in name:
            raise ValueError(f"file names must be strings without NUL bytes: {name!r}")
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
            raise ValueError(f"file names must be relative and stay in the scratch dir: {name!r}")
        contents.append((name, content.encode() if isinstance(content, str) else content))
    header = json.dumps({
        "argv": argv, "env": {**ENV, "PWD": SCRATCH}, "files": [[name, len(data)] for name, data in contents],
        "stdin": len(stdin), "rlimits": rlimit, "wall_s": wall_s, "nonce": nonce,
    }).encode()
    return b"".join([len(header).to_bytes(8, "big"), header, *(data for _, data in contents), stdin])


class Streams:
    """One run's stdout (1) and stderr (2) as they come, each capped, until both end markers of its nonce."""

    def __init__(self, nonce: str, limits: Limits) -> None:
        self.out, self.err = bytearray(), bytearray()
        self.nonce = nonce.encode()
        self.end_out = b"\0sandbox: end %s\n" % self.nonce
        self.caps = {1: (self.out, limits.output_bytes + len(self.end_out)),
                     2: (self.err, limits.output_bytes + TRAILER_MAX)}
        self.done = {1: False, 2: False}
        self.killed: Stop | None = None

    @property
    def ended(self) -> bool:
        return self.done[1] and self.done[2]

    def feed(self, stream: int, chunk: bytes) -> None:
        buffer, cap = self.caps[stream]
        if self.done[stream]:
            self.killed = self.killed or "output"  # bytes after the end: never ours to keep
            return
        buffer += chunk
        if stream == 1:
            self.done[1] = self.out.endswith(self.end_out)
        else:
            trailer = TRAILER.search(self.err, max(0, len(self.err) - TRAILER_MAX))
            self.done[2] = trailer is not None and trailer[1] == self.nonce
        if len(buffer) > cap and not self.done[stream]:
            del buffer[cap:]
            self.killed = "output"

    def clean(self) -> bool:
        """The agent reported the run's end and a clean reset, and we did not kill it: its sandbox can be reused."""
        return self.killed is None and self.reset_left() == "ok"

    def reset_left(self) -> str:
        """What the agent's reset could not undo ("ok": nothing), or why there is no report of it."""
        trailer = TRAILER.search(self.err) if self.ended else None
        return trailer[6].decode() if trailer else "no report: the agent is gone or was stopped"

    def result(self, status: int | None, oom_killed: bool, limits: Limits, *, wall_s: float, gone: str) -> RunResult:
        """The run's result from the trailer; without one (the agent is gone: `status` is how its sandbox ended, and
        whether the OOM killer ended it), SandboxError saying `gone` unless we killed it or it was OOM-killed."""
        out = self.out[:-len(self.end_out)] if self.done[1] else self.out
        err, killed = self.err, self.killed
        trailer = TRAILER.search(err) if self.ended else None
        cpu_s, oom, timeout = (float(trailer[3]), int(trailer[4]), trailer[5] == b"1") if trailer else (
            0.0, int(oom_killed), False)
        if trailer:
            status, err = int(trailer[2]), err[:trailer.start()]
        if len(out) > limits.output_bytes or len(err) > limits.output_bytes:  # our caps leave room for the markers
            killed, out, err = killed or "output", out[:limits.output_bytes], err[:limits.output_bytes]
        if timeout:
            killed = killed or "timeout"
        if killed is not None:
            return RunResult(None, signal.SIGKILL, out.decode(errors="replace"), err.decode(errors="replace"), wall_s,
                             cpu_s, killed)
        if not trailer and not oom_killed:
            raise SandboxError(f"{gone} (exit {status}): {err.decode(errors='replace')[-300:]}")
        exit_code, sig = (status, None) if status <= 128 else (None, status - 128)
        return finished(exit_code, sig, bytes(out), bytes(err), limits=limits, wall_s=wall_s, cpu_s=cpu_s, oom=oom)
