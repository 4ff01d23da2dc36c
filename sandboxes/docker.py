"""The Docker backend: every run in a fresh container taken from a pool of warm ones, removed when the run ends.

    from sandboxes.docker import DockerSandbox
    with DockerSandbox() as sandbox:  # needs a running dockerd and the image: `make sandbox-image`
        sandbox.run(["python3", "-c", "print(1)"])

The image (`selfplay-sandbox:bookworm`) is a debootstrapped Debian with python3, built without a registry. A container
is made ahead of its run (a container start costs ~0.2 s of CPU) with:
- `--network none` (only its own loopback), `--ipc none` (no /dev/shm), a read-only root, and one writable place:
  the scratch dir /tmp, a tmpfs of `scratch_bytes` (nosuid, nodev, noexec), the cwd and $HOME;
- uid:gid 65534:65534, every capability dropped, no-new-privileges, Docker's default seccomp profile;
- a memory cgroup of `memory_bytes` (swap included) for the whole run, a pids cgroup of `processes` (the agent
  counts as one), ulimits for CPU, file size, open files and no core files; no log driver (output is never stored);
- as its main process (pid 1) our *agent*, a small trusted Python program that waits on its stdin for one job.
A run takes a warm container with those limits (or makes one), attaches to it and sends the job (argv, `files`, then
`stdin`). The agent writes the files, writes `READY` to stderr, forks the program with hard rlimits (CPU, address
space, file size, open files, core) and the environment PATH, HOME, LANG, PYTHONDONTWRITEBYTECODE, PWD; waits for
it while reaping every orphan; then SIGKILLs whatever is left, reaps it, writes a trailer (CPU time of every process
of the run, the cgroup's OOM-kill count) to stderr and exits with the program's status (128 + N for signal N). As pid
1 it ignores every signal sent from inside, and its exit takes down every process of the container. Meanwhile we read
both streams (capped at `output_bytes` each: one byte more and the container is killed), enforce the wall deadline
(the container is killed at it), then wait for the container and REMOVE it: `run` returns once every process of the
run is gone and its container with it. A container is never reused, so nothing persists. A background thread keeps
`pool_size` warm containers for the limits of the latest run; a run with other limits makes its container cold.
`wall_s` counts from the moment the run gets its container: a cold container's start is not counted.

Why a run stopped (`RunResult.stopped`): "timeout" (our wall-clock kill, or SIGXCPU / SIGKILL after its CPU
seconds), "output" (our kill past a cap), "memory" (the cgroup OOM-killed a process, or it ended with Python's
`MemoryError` under RLIMIT_AS), "signal", "exit". A program cannot fake `READY` or the trailer: only the first and
the last line of stderr count, and the agent writes the last one after every other process is dead. The exit
status comes from Docker, not from the stream.

Leftovers: containers carry the label `selfplay.sandbox=1` and `selfplay.sandbox.owner=HOST:PID:START`. `close()`
removes the pool. If the process dies without `close()`: a warm agent exits on its own after `TTL_S` without a job,
a running one kills its run `BACKSTOP_S` after its deadline, and the next `DockerSandbox` made on this host removes
every container of an owner that is gone. By hand: `docker rm -f $(docker ps -aq --filter label=selfplay.sandbox)`.

What this does NOT protect against:
- kernel bugs: containers share the host's kernel; Docker's default seccomp profile blocks some syscalls, not most;
- side channels (timing, cache, Spectre-class) and kernel-wide information /proc and /sys show (uptime, load, CPU
  and memory totals, kernel version, the cgroup's own counters);
- the host's CPU: no CPU quota, a run may use every core until its deadline;
- the Docker daemon: whoever can talk to it is root on the host; a flood of runs loads dockerd and containerd;
- exhaustion of kernel-wide tables (inodes, file handles) by many runs at once; POSIX message queues in the
  container's own /dev/mqueue (gone with the container);
- anything readable in the image: it is public, read-only and visible to the program.
"""

import json
import logging
import math
import os
import re
import selectors
import signal
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

import docker
import docker.errors
import psutil
import requests

from sandboxes import Limits, RunResult, Sandbox, SandboxError, Stop

log = logging.getLogger(__name__)

IMAGE = "selfplay-sandbox:bookworm"
LABEL = "selfplay.sandbox"
SCRATCH = "/tmp"
NOBODY = "65534:65534"
ENV = {"PATH": "/usr/bin:/bin", "HOME": SCRATCH, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
READY = b"sandbox: ready\n"
TRAILER = re.compile(rb"\0sandbox: end cpu=(\d+\.\d+) oom=(\d+)\n\Z")
TRAILER_MAX = 64  # bytes: the longest trailer the agent writes
TTL_S = 1800  # a warm agent that gets no job in this time exits
BACKSTOP_S = 30  # the agent kills its run this long after the deadline if we did not (we died)
ATTEMPTS = 3  # tries to start a container, or to get a run through one, before SandboxError
START_DAEMON = "start the Docker daemon (`dockerd > /var/log/dockerd.log 2>&1 &`, or `systemctl start docker`)"

# The agent: the container's pid 1 (python3 -I -S -c AGENT TTL_S). Protocol on its stdin: 8 bytes of header length,
# the JSON header {argv, env, files: [[name, size]], rlimits: [[resource, soft, hard]], alarm_s}, the files' bytes in
# order, then the program's stdin until EOF.
AGENT = r'''
import json, os, resource, select, signal, sys

signal.signal(signal.SIGINT, signal.SIG_DFL)  # as pid 1, a signal without handler from inside is dropped

def read_exactly(n):
    chunks = []
    while n:
        chunk = os.read(0, min(n, 1 << 20))
        if not chunk:
            os._exit(125)
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)

def end(status):
    try:
        os.kill(-1, signal.SIGKILL)  # every process of the container but this one
    except ProcessLookupError:
        pass
    try:
        while True:
            os.waitpid(-1, 0)
    except ChildProcessError:
        pass
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    oom = 0
    for path in ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"):
        try:
            with open(path) as f:
                oom = int(dict(line.split() for line in f).get("oom_kill", 0))
            break
        except (OSError, ValueError):
            pass
    os.write(2, b"\0sandbox: end cpu=%.6f oom=%d\n" % (usage.ru_utime + usage.ru_stime, oom))
    os._exit(status)

if not select.select([0], [], [], int(sys.argv[1]))[0]:
    sys.exit(0)  # no job came: the pool that made this container is gone
job = json.loads(read_exactly(int.from_bytes(read_exactly(8), "big")))
for name, size in job["files"]:
    if os.path.dirname(name):
        os.makedirs(os.path.dirname(name), exist_ok=True)
    with open(name, "wb") as f:
        f.write(read_exactly(size))
signal.signal(signal.SIGALRM, lambda *_: end(128 + signal.SIGKILL))
signal.alarm(job["alarm_s"])
os.write(2, b"sandbox: ready\n")
pid = os.fork()
if pid == 0:
    try:
        for name, soft, hard in job["rlimits"]:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")  # the OOM killer takes the program's processes, never the agent
        for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGALRM):
            signal.signal(s, signal.SIG_DFL)
        os.execvpe(job["argv"][0], job["argv"], job["env"])
    except BaseException as error:
        os.write(2, ("sandbox: cannot run %r: %s\n" % (job["argv"][0], error)).encode())
        os._exit(127)
while True:
    got, status = os.waitpid(-1, 0)
    if got == pid:
        break
code = os.waitstatus_to_exitcode(status)
end(code if code >= 0 else 128 - code)
'''


@dataclass
class Warm:
    """A started container waiting for its job."""

    id: str
    born: float


def container_limits(limits: Limits) -> Limits:
    """The part of `limits` fixed when a container is made: runs with equal such parts can share a pool."""
    return replace(limits, wall_s=0.0, output_bytes=0)


DOCKER_ULIMITS = {"RLIMIT_CPU": "cpu", "RLIMIT_FSIZE": "fsize", "RLIMIT_NOFILE": "nofile", "RLIMIT_CORE": "core"}


def rlimits(limits: Limits) -> list[tuple[str, int, int]]:
    """(resource, soft, hard) for the program; the agent sets them, Docker's ulimits set all but AS for the container."""
    cpu = max(1, math.ceil(limits.cpu_s))
    return [("RLIMIT_CPU", cpu, cpu + 1), ("RLIMIT_AS", limits.memory_bytes, limits.memory_bytes),
            ("RLIMIT_FSIZE", limits.file_bytes, limits.file_bytes),
            ("RLIMIT_NOFILE", limits.open_files, limits.open_files), ("RLIMIT_CORE", 0, 0)]


def job(argv: list[str], files: Mapping[str, str | bytes] | None, stdin: bytes, limits: Limits) -> bytes:
    """What the agent reads on its stdin; ValueError for a file name that leaves the scratch dir."""
    contents = []
    for name, content in (files or {}).items():
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
            raise ValueError(f"file names must be relative and stay in the scratch dir: {name!r}")
        contents.append((name, content.encode() if isinstance(content, str) else content))
    header = json.dumps({
        "argv": argv, "env": {**ENV, "PWD": SCRATCH}, "files": [[name, len(data)] for name, data in contents],
        "rlimits": rlimits(limits), "alarm_s": int(limits.wall_s) + BACKSTOP_S,
    }).encode()
    return b"".join([len(header).to_bytes(8, "big"), header, *(data for _, data in contents), stdin])


def owner() -> str:
    me = psutil.Process()
    return f"{socket.gethostname()}:{me.pid}:{me.create_time()}"


class DockerSandbox(Sandbox):
    """Runs programs in fresh Docker containers from a warm pool; SandboxError at construction when Docker or the
    image is missing. Call `close()` (or use it as a context manager) to remove the pool."""

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
        self.lock = threading.Condition()
        self.warm: dict[Limits, list[Warm]] = {}
        self.want = container_limits(Limits())
        self.closed = False
        self.refiller = threading.Thread(target=self.refill, name="docker-sandbox-pool", daemon=True)
        self.refiller.start()
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

    def start_container(self, limits: Limits) -> Warm:
        """A started container for `limits`, after up to ATTEMPTS tries; SandboxError saying what to do."""
        host_config = self.client.api.create_host_config(
            network_mode="none", ipc_mode="none", read_only=True, cap_drop=["ALL"],
            security_opt=["no-new-privileges"], pids_limit=limits.processes, mem_limit=limits.memory_bytes,
            memswap_limit=limits.memory_bytes, log_config=docker.types.LogConfig(type="none"),
            tmpfs={SCRATCH: f"rw,nosuid,nodev,noexec,size={limits.scratch_bytes},uid=65534,gid=65534,mode=0700"},
            ulimits=[docker.types.Ulimit(name=DOCKER_ULIMITS[name], soft=soft, hard=hard)
                     for name, soft, hard in rlimits(limits) if name in DOCKER_ULIMITS],
        )
        error: Exception | None = None
        for attempt in range(ATTEMPTS):
            time.sleep(0.5 * attempt)
            cid = None
            try:
                cid = self.client.api.create_container(
                    self.image, ["/usr/bin/python3", "-I", "-S", "-c", AGENT, str(TTL_S)], user=NOBODY,
                    working_dir=SCRATCH, environment=ENV, hostname="sandbox", stdin_open=True,  # + StdinOnce
                    labels={LABEL: "1", f"{LABEL}.owner": self.owner}, host_config=host_config,
                )["Id"]
                self.client.api.start(cid)
                return Warm(cid, time.monotonic())
            except docker.errors.ImageNotFound:
                raise SandboxError(f"the Docker image {self.image} is missing: run `make sandbox-image`") from None
            except (docker.errors.DockerException, requests.RequestException) as failure:
                error = failure
                if cid is not None:
                    self.remove(cid)
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

    def refill(self) -> None:
        """Background thread: keep `pool_size` warm containers for the latest run's limits, drop other ones."""
        while True:
            with self.lock:
                while not self.closed and len(self.warm.get(self.want, [])) >= self.pool_size and (
                        self.warm.keys() <= {self.want}):
                    self.lock.wait()
                if self.closed:
                    return
                want = self.want
                stale = [w for key, ws in self.warm.items() if key != want for w in ws]
                self.warm = {want: self.warm.get(want, [])}
            for w in stale:
                self.remove(w.id)
            if len(self.warm[want]) >= self.pool_size:
                continue
            try:
                made = self.start_container(want)
            except SandboxError as error:  # runs then start their own container, and raise if they cannot
                log.warning("sandbox pool: %s", error)
                with self.lock:
                    self.lock.wait(5)
                continue
            with self.lock:
                keep = not self.closed and want == self.want
                if keep:
                    self.warm[want].append(made)
            if not keep:
                self.remove(made.id)

    def take(self, limits: Limits) -> Warm:
        key = container_limits(limits)
        with self.lock:
            if self.closed:
                raise SandboxError("this DockerSandbox is closed")
            self.want = key
            ready = self.warm.get(key, [])
            taken = ready.pop(0) if ready else None
            self.lock.notify_all()
        if taken is not None and time.monotonic() - taken.born > TTL_S - 60:
            self.remove(taken.id)  # its agent is about to give up waiting
            taken = None
        return taken or self.start_container(key)

    def close(self) -> None:
        """Remove every warm container of the pool. Runs in flight remove their own."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.lock.notify_all()
            warm = [w for ws in self.warm.values() for w in ws]
            self.warm = {}
        self.refiller.join()
        for w in warm:
            self.remove(w.id)
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
        payload = job(argv, files, stdin, limits)
        failure = ""
        for _ in range(ATTEMPTS):
            container = self.take(limits)
            start = time.monotonic()
            try:
                out, err, killed = self.stream(container.id, payload, limits, start)
                status = None if killed else self.client.api.wait(container.id)["StatusCode"]
                oom_killed = status == 137 and not TRAILER.search(err) and (
                    self.client.api.inspect_container(container.id)["State"]["OOMKilled"])
            except (docker.errors.DockerException, requests.RequestException) as error:
                raise SandboxError(f"Docker failed during a run: {error}. Check `docker info`") from None
            finally:
                self.remove(container.id)
            if err.startswith(READY) or killed:
                return self.result(status, bytes(out), bytes(err), killed, oom_killed, limits,
                                   wall_s=time.monotonic() - start)
            failure = f"exit {status}: {err.decode(errors='replace')[-500:]}"  # the agent never got to the program
        raise SandboxError(f"the Docker sandbox could not start the program in {ATTEMPTS} containers ({failure})")

    def stream(self, cid: str, payload: bytes, limits: Limits, start: float) -> tuple[bytearray, bytearray, Stop | None]:
        """Send the job, read both streams until the container's end, a cap or the deadline."""
        out, err = bytearray(), bytearray()
        caps = {1: (out, limits.output_bytes), 2: (err, limits.output_bytes + len(READY) + TRAILER_MAX)}
        frames = bytearray()  # Docker's multiplexed stream: 8-byte header (stream, 0, 0, 0, size) + payload
        sent, killed = 0, None
        attached = self.client.api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        sock = getattr(attached, "_sock", attached)  # the SDK hands a SocketIO over a unix socket
        try:
            sock.setblocking(False)
            with selectors.DefaultSelector() as selector:
                selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
                while killed is None:
                    left = start + limits.wall_s - time.monotonic()
                    events = selector.select(left) if left > 0 else []
                    if not events:
                        killed = "timeout"
                        break
                    _, mask = events[0]
                    if mask & selectors.EVENT_WRITE:
                        try:
                            sent += sock.send(payload[sent:sent + (1 << 20)])
                        except BlockingIOError:
                            pass
                        except OSError:  # the run ended without reading all of its stdin
                            sent = len(payload)
                        if sent >= len(payload):
                            try:
                                sock.shutdown(socket.SHUT_WR)  # EOF on the program's stdin
                            except OSError:
                                pass
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
                            buffer, cap = caps.get(frames[0], (None, 0))
                            if buffer is not None:
                                buffer += frames[8:8 + size]
                                if len(buffer) > cap:
                                    del buffer[cap:]
                                    killed = "output"
                            del frames[:8 + size]
        finally:
            attached.close()
            sock.close()
        return out, err, killed

    @staticmethod
    def result(status: int | None, out: bytes, err: bytes, killed: Stop | None, oom_killed: bool, limits: Limits,
               *, wall_s: float) -> RunResult:
        err = err[len(READY):] if err.startswith(READY) else err
        trailer = TRAILER.search(err)
        cpu_s, oom = (float(trailer[1]), int(trailer[2])) if trailer else (0.0, int(oom_killed))
        if trailer:
            err = err[:trailer.start()]
        if len(err) > limits.output_bytes:  # our stderr cap leaves room for the trailer: cut what passed the real one
            killed, err = killed or "output", err[:limits.output_bytes]
        if killed is not None:
            return RunResult(None, signal.SIGKILL, out.decode(errors="replace"), err.decode(errors="replace"), wall_s, cpu_s,
                             killed)
        if not trailer and not oom_killed:
            raise SandboxError(f"the Docker sandbox's agent was killed from outside (exit {status}): is dockerd "
                               f"healthy? {err.decode(errors='replace')[-300:]}")
        exit_code, sig = (status, None) if status <= 128 else (None, status - 128)
        if sig == 24 or (sig == 9 and cpu_s >= limits.cpu_s and not oom):  # SIGXCPU, then SIGKILL at the hard limit
            stopped: Stop = "timeout"
        elif oom and (sig is not None or exit_code != 0):
            stopped = "memory"
        elif sig is not None:
            stopped = "signal"
        elif exit_code != 0 and err.rstrip().rsplit(b"\n", 1)[-1].startswith(b"MemoryError"):
            stopped = "memory"
        else:
            stopped = "exit"
        return RunResult(exit_code, sig, out.decode(errors="replace"), err.decode(errors="replace"), wall_s, cpu_s,
                         stopped)
