"""The Docker backend: runs in warm containers from a pool, each container reused for up to `MAX_RUNS` runs and reset
between them by a trusted agent; anything about a reset that is not clean and the container is removed instead.

    from sandboxes.docker import DockerSandbox
    with DockerSandbox() as sandbox:  # needs a running dockerd and the image: `make sandbox-image`
        sandbox.run(["python3", "-c", "print(1)"])

The image (`selfplay-sandbox:bookworm`) is a debootstrapped Debian with python3, built without a registry. A container
(its create, start and remove cost Docker ~0.2 s of CPU, hence the reuse) is made ahead of its runs with:
- `--network none` (only its own loopback), `--ipc none` (no /dev/shm) and `SANDBOX_SYSCTLS` (no SysV shared memory,
  semaphores or message queues, no POSIX message queue, no TCP TIME_WAIT, metrics or Fast Open, no MPTCP: nothing
  to leave behind there), a read-only root, and one writable place: the scratch dir /tmp, a tmpfs of `scratch_bytes`
  and one file per KiB of it (nosuid, nodev, noexec, owned by 65534, mode 0700), the cwd and $HOME;
- every capability dropped but `AGENT_CAPS` (SETUID, SETGID, SETPCAP, KILL, DAC_OVERRIDE, FOWNER, CHOWN, for the
  agent alone), no-new-privileges, Docker's default seccomp profile;
- a memory cgroup of `memory_bytes` (swap included), a pids cgroup of `processes` (the agent counts as one), ulimits
  for open files and no core files (CPU and file size only per program: the agent's CPU time adds up over runs, and
  it writes the program's stdin, of any size, into a file); no log driver (output is never stored);
- as its main process (pid 1), as root, our agent (`sandboxes/agent.py`, shared with the bubblewrap backend): it
  runs each program as 65534 with every capability gone, and resets the container after it (kills every other
  process, checks none is left, empties /tmp).
A run takes a warm container with those limits (or makes one) with the attach stream it holds open, and sends the
job (argv, `files`, `stdin`, rlimits for CPU, address space, file size, open files and core, the wall time left, a
fresh random nonce). We read both streams until both markers (a program cannot forge them: it never sees the nonce, and every process of
the run is dead before the agent writes them), capped at `output_bytes` each; the container goes back into the pool
when its reset was clean, else (and past a cap, if the agent has not reported `GRACE_S` past the deadline, on any
doubt about the stream, or after `MAX_RUNS` runs) it is REMOVED. So `run` returns once every process of the run is
gone: reset, or removed with its container. A background thread keeps `pool_size` containers (warm or in a run) for
the limits of the latest run; a run with other limits makes its container cold. `wall_s` counts from the moment the
run gets its container: a cold container's start is not counted.

Shared between runs of one container (what the reset does not undo): the container's kernel-side state: its memory
and pids cgroups (their counters, the page cache a run charged to them), its network namespace (loopback only, no
TCP TIME_WAIT, and the reset checks no socket is left), its uts and ipc namespaces (empty), the tmpfs's inode numbers
and timestamps, and the agent process. A run cannot see the previous run's files, processes, rlimits, sockets or IPC
objects; one written to read the shared counters (pids, /proc/net/snmp, the cgroups') learns a little of it.

Why a run stopped (`RunResult.stopped`): "timeout" (the agent's wall-clock kill or ours, or SIGXCPU / SIGKILL after
its CPU seconds), "output" (past a cap), "memory" (the cgroup OOM-killed a process, or it ended with Python's
`MemoryError` under RLIMIT_AS), "signal", "exit". The exit status comes from the agent's trailer (from Docker when
the agent itself is gone, e.g. OOM-killed: then the container is removed).

Leftovers: containers carry the label `selfplay.sandbox=1` and `selfplay.sandbox.owner=HOST:PID:START`. `close()`
removes the pool. If the process dies without `close()`, even by kill -9, a watchdog process it started
(`sandboxes/docker_watchdog.py`, woken by the parent-death signal) removes its containers, runs in flight included;
an agent also exits when its stream closes (or after `TTL_S` without a job), and the next `DockerSandbox` made on
this host removes every container of an owner that is gone. By hand: `docker rm -f $(docker ps -aq --filter label=selfplay.sandbox)`.

What this does NOT protect against:
- kernel bugs: containers share the host's kernel; Docker's default seccomp profile blocks some syscalls, not most;
  a kernel bug that gives a program root in the container also gives it the agent's capabilities and the next runs
  of that container;
- side channels (timing, cache, Spectre-class) and kernel-wide information /proc and /sys show (uptime, load, CPU
  and memory totals, kernel version, the cgroup's own counters, which also carry over between runs of a container);
- the host's CPU: no CPU quota, a run may use every core until its deadline;
- the Docker daemon: whoever can talk to it is root on the host; a flood of runs loads dockerd and containerd;
- exhaustion of kernel-wide tables (inodes, file handles) by many runs at once, and of uid 65534's per-user limits,
  which every sandbox's program shares (inotify instances, fds in flight over unix sockets): a run can make them
  fail for runs at the same time;
- kernel-wide counters shared by every network namespace: the TCP ephemeral port a connect gets moves with how many
  connects any sandbox made (a covert channel between runs, like the pid counter);
- anything readable in the image: it is public, read-only and visible to the program (the agent's source too).
"""

import ctypes
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import docker
import docker.errors
import psutil
import requests

from sandboxes import Limits, RunResult, SandboxError
from sandboxes.agent_client import (
    AGENT_CAPS, AGENT_PATH, ATTEMPTS, ENV, GRACE_S, SANDBOX_SYSCTLS, SCRATCH, TTL_S, Streams, rlimits,
)
from sandboxes.agent_pool import AgentPool, AgentSandbox, Warm

log = logging.getLogger(__name__)

IMAGE = "selfplay-sandbox:bookworm"
LABEL = "selfplay.sandbox"
MAX_RUNS = 100  # a container serves at most this many runs, then is removed
PR_SET_PDEATHSIG = 1
PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: between fork and exec the child only calls it
START_DAEMON = "start the Docker daemon (`dockerd > /var/log/dockerd.log 2>&1 &`, or `systemctl start docker`)"


class Container(Warm):
    """A started container whose agent waits for its next job, with the attach stream it gets its jobs on."""

    def __init__(self, id: str, key: Limits, remove: Callable[[str], None]) -> None:
        super().__init__(key)
        self.id, self.remove = id, remove
        self.attached = self.sock = None

    def end(self) -> None:
        if self.attached is not None:
            self.attached.close()
            self.sock.close()
            self.attached = self.sock = None
        self.remove(self.id)


def container_limits(limits: Limits) -> Limits:
    """The part of `limits` fixed when a container is made: runs with equal such parts can share a pool."""
    return replace(limits, wall_s=0.0, output_bytes=0)


DOCKER_ULIMITS = {"RLIMIT_NOFILE": "nofile", "RLIMIT_CORE": "core"}  # also the agent's: no CPU, no file size


def scratch_inodes(limits: Limits) -> int:
    """Files the scratch tmpfs may hold: one per KiB of it (each costs the host kernel memory, whatever its size)."""
    return max(limits.scratch_bytes // 1024, 64)


def owner() -> str:
    me = psutil.Process()
    return f"{socket.gethostname()}:{me.pid}:{me.create_time()}"


class DockerSandbox(AgentSandbox):
    """Runs programs in fresh Docker containers from a warm pool; SandboxError at construction when Docker or the
    image is missing. Call `close()` (or use it as a context manager) to remove the pool."""

    name, gone = "Docker", "the Docker sandbox's agent was killed from outside: is dockerd healthy?"

    def __init__(self, *, image: str = IMAGE, pool_size: int = 2) -> None:
        try:
            self.client = docker.from_env(max_pool_size=32)
            self.client.ping()
        except (docker.errors.DockerException, requests.RequestException) as error:
            raise SandboxError(f"cannot reach the Docker daemon ({error}): {START_DAEMON}") from None
        try:
            self.client.api.inspect_image(image)
        except docker.errors.ImageNotFound:
            self.client.close()
            raise SandboxError(f"the Docker image {image} is missing: run `make sandbox-image`") from None
        self.image, self.pool_size, self.owner = image, pool_size, owner()
        self.remove_orphans()
        self.watchdog: subprocess.Popen | None = None
        self.pool = AgentPool(self.start_container, size=pool_size, max_runs=MAX_RUNS, ahead=True,
                              on_thread=self.start_watchdog, want=container_limits(Limits()))
        try:
            probe = self.run(["true"], limits=Limits(wall_s=30))
            if not probe.ok:
                raise SandboxError(f"a Docker sandbox started but `true` failed in it: {probe}")
        except BaseException:
            self.close()
            raise

    # --- containers ----------------------------------------------------------------------------------------------

    def remove_orphans(self) -> None:
        """Remove the containers of owners on this host that are gone (a process that died without `close()`)."""
        host = socket.gethostname()
        for container in self.client.api.containers(all=True, filters={"label": LABEL}):
            parts = container["Labels"].get(f"{LABEL}.owner", "").split(":")
            if len(parts) != 3 or parts[0] != host:
                continue
            try:
                alive = str(psutil.Process(int(parts[1])).create_time()) == parts[2]
            except (psutil.NoSuchProcess, ValueError):
                alive = False
            if not alive:
                self.remove(container["Id"])

    def start_container(self, limits: Limits) -> Container:
        """A started container for `limits` (a pool key: see container_limits), attached, after up to ATTEMPTS tries;
        SandboxError saying what to do."""
        host_config = self.client.api.create_host_config(
            network_mode="none", ipc_mode="none", read_only=True, cap_drop=["ALL"], cap_add=AGENT_CAPS,
            security_opt=["no-new-privileges"], pids_limit=limits.processes, mem_limit=limits.memory_bytes,
            memswap_limit=limits.memory_bytes, log_config=docker.types.LogConfig(type="none"),
            sysctls=SANDBOX_SYSCTLS,
            tmpfs={SCRATCH: f"rw,nosuid,nodev,noexec,size={limits.scratch_bytes},nr_inodes={scratch_inodes(limits)},"
                            "uid=65534,gid=65534,mode=0700"},
            ulimits=[docker.types.Ulimit(name=DOCKER_ULIMITS[name], soft=soft, hard=hard)
                     for name, soft, hard in rlimits(limits, processes=False) if name in DOCKER_ULIMITS],
        )
        error: Exception | None = None
        for attempt in range(ATTEMPTS):
            time.sleep(0.5 * attempt)
            cid = None
            try:
                cid = self.client.api.create_container(
                    self.image, ["/usr/bin/python3", "-I", "-S", "-c", AGENT_PATH.read_text(), str(TTL_S)], user="0:0",
                    working_dir="/", environment=ENV, hostname="sandbox", stdin_open=True,  # + StdinOnce
                    labels={LABEL: "1", f"{LABEL}.owner": self.owner}, host_config=host_config,
                )["Id"]
                warm = Container(cid, limits, self.remove)
                warm.attached = self.client.api.attach_socket(
                    cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
                warm.sock = getattr(warm.attached, "_sock", warm.attached)  # the SDK hands a SocketIO over a unix socket
                self.client.api.start(cid)
                return warm
            except docker.errors.ImageNotFound:
                raise SandboxError(f"the Docker image {self.image} is missing: run `make sandbox-image`") from None
            except (docker.errors.DockerException, requests.RequestException) as failure:
                error = failure
                if cid is not None:
                    warm.end()
        raise SandboxError(f"Docker could not start a sandbox container in {ATTEMPTS} tries: {error}. "
                           f"Check `docker info` and dockerd's log, or {START_DAEMON}")

    def remove(self, cid: str) -> None:
        """Kill (if running) and remove a container; returns when it is gone."""
        try:
            self.client.api.remove_container(cid, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as error:
            if "already in progress" not in str(error):
                raise SandboxError(f"Docker could not remove sandbox container {cid[:12]}: {error}") from None
            self.client.api.wait(cid, condition="removed")

    # --- the pool ------------------------------------------------------------------------------------------------

    def start_watchdog(self) -> None:
        """The process that removes this pool's containers if we die (see the module's docstring); from the pool
        thread, which lives as long as the pool: the parent-death signal fires when the starting thread ends."""
        parent = os.getpid()

        def watch_parent():
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)

        self.watchdog = subprocess.Popen(
            [sys.executable, "-I", str(Path(__file__).with_name("docker_watchdog.py")), f"{LABEL}.owner={self.owner}",
             str(parent)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=watch_parent)

    def close(self) -> None:
        """Remove every warm container of the pool. Runs in flight remove their own."""
        if self.pool.closed:
            return
        if self.watchdog is not None:  # before the pool thread ends and sets it off
            self.watchdog.kill()
            self.watchdog.wait()
        self.pool.close()
        self.client.close()

    # --- runs ------------------------------------------------------------------------------------------------------

    def run(
        self,
        argv: list[str],
        *,
        files: Mapping[str, str | bytes] | None = None,
        stdin: bytes = b"",
        limits: Limits = Limits(),
    ) -> RunResult:
        return self.run_in_agent(argv, files, stdin, limits, key=container_limits(limits),
                                 rlimits=rlimits(limits, processes=False), start_counts=False)

    def vanished(self, container: Container) -> tuple[int | None, bool]:
        try:
            status = self.client.api.wait(container.id, timeout=GRACE_S)["StatusCode"]
            return status, status == 137 and self.client.api.inspect_container(container.id)["State"]["OOMKilled"]
        except (docker.errors.DockerException, requests.RequestException) as error:
            raise SandboxError(f"Docker failed during a run: {error}. Check `docker info`") from None

    def exchange(self, container: Container, payload: bytes, streams: Streams, deadline: float) -> None:
        """Docker multiplexes both streams in one."""
        frames = bytearray()  # each frame: an 8-byte header (stream, 0, 0, 0, size), then size bytes
        sent = 0
        sock = container.sock
        sock.setblocking(False)
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while streams.killed is None and not streams.ended:
                left = deadline - time.monotonic()
                events = selector.select(left) if left > 0 else []
                if not events:
                    streams.killed = "timeout"
                    break
                _, mask = events[0]
                if mask & selectors.EVENT_WRITE:
                    try:
                        sent += sock.send(payload[sent:sent + (1 << 20)])
                    except BlockingIOError:
                        pass
                    except OSError:  # the agent is gone
                        sent = len(payload)
                    if sent >= len(payload):
                        selector.modify(sock, selectors.EVENT_READ)
                if mask & selectors.EVENT_READ:
                    try:
                        chunk = sock.recv(1 << 16)
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    if not chunk:
                        break
                    frames += chunk
                    while len(frames) >= 8 and len(frames) >= 8 + (size := int.from_bytes(frames[4:8], "big")):
                        if frames[0] in (1, 2):
                            streams.feed(frames[0], bytes(frames[8:8 + size]))
                        del frames[:8 + size]
        if frames and streams.ended:
            streams.killed = streams.killed or "output"  # part of a frame after the end: never ours to keep
