"""The Docker backend: runs in warm containers from a pool, each container reused for up to `MAX_RUNS` runs and reset
between them by a trusted agent; anything about a reset that is not clean and the container is removed instead.

    from sandboxes.docker import DockerSandbox
    with DockerSandbox() as sandbox:  # needs a running dockerd and the image: `make sandbox-image`
        sandbox.run(["python3", "-c", "print(1)"])

The image (`selfplay-sandbox:bookworm`) is a debootstrapped Debian with python3, built without a registry. A container
(its create, start and remove cost Docker ~0.2 s of CPU, hence the reuse) is made ahead of its runs with:
- `--network none` (only its own loopback), `--ipc none` (no /dev/shm) and IPC sysctls of 0 (no SysV shared memory,
  semaphores or message queues, no POSIX message queue: nothing to leave behind there), a read-only root, and one
  writable place: the scratch dir /tmp, a tmpfs of `scratch_bytes` (nosuid, nodev, noexec, owned by 65534, mode
  0700), the cwd and $HOME;
- every capability dropped but `AGENT_CAPS` (SETUID, SETGID, SETPCAP, KILL, DAC_OVERRIDE, FOWNER, for the agent
  alone), no-new-privileges, Docker's default seccomp profile;
- a memory cgroup of `memory_bytes` (swap included), a pids cgroup of `processes` (the agent counts as one), ulimits
  for file size, open files and no core files (CPU only per program: the agent's own CPU time adds up over runs); no
  log driver (output is never stored);
- as its main process (pid 1), as root, our *agent*: a small trusted Python program that takes jobs on its stdin.
A run takes a warm container with those limits (or makes one) with the attach stream it holds open, and sends the
job (argv, `files`, `stdin`, the wall time left, a fresh random nonce). The agent forks the program: it drops every
capability from its bounding set, takes oom_score_adj 1000 (the cgroup's OOM killer takes it before the agent), its
own session, no supplementary groups, uid:gid 65534:65534 (so no capability is left, and with no_new_privs and an
empty bounding set none can come back), writes the files into /tmp, gets `stdin` from a memfd, hard rlimits (CPU,
address space, file size, open files, core) and the environment PATH, HOME, LANG, PYTHONDONTWRITEBYTECODE, PWD. The
agent waits for it, reaping every orphan, until it exits or the wall deadline; then it resets the container: SIGKILL
to every process but itself (kill -1, repeated, reaping, until none is left: uid 65534 processes cannot signal the
root agent), checks /proc holds only itself, empties /tmp (and its mode, owner and xattrs) and checks it is empty with
all its blocks free. Then it writes an end marker with the nonce to stdout and a trailer (nonce, exit status, CPU
time of every process of the run, the cgroup's OOM kills during it, timeout, whether the reset was clean) to stderr.
We read both streams until both markers (a program cannot forge them: it never sees the nonce, and every process of
the run is dead before the agent writes them), capped at `output_bytes` each; the container goes back into the pool
when its reset was clean, else (and past a cap, if the agent has not reported `GRACE_S` past the deadline, on any
doubt about the stream, or after `MAX_RUNS` runs) it is REMOVED. So `run` returns once every process of the run is
gone: reset, or removed with its container. A background thread keeps `pool_size` containers (warm or in a run) for
the limits of the latest run; a run with other limits makes its container cold. `wall_s` counts from the moment the
run gets its container: a cold container's start is not counted.

Shared between runs of one container (what the reset does not undo): the container's kernel-side state: its memory
and pids cgroups (their counters, the page cache a run charged to them), its network namespace (loopback only, and
every socket dies with its process), its uts and ipc namespaces (empty), the tmpfs's inode numbers and timestamps, and
the agent process. A run cannot see the previous run's files, processes, rlimits or IPC objects.

Why a run stopped (`RunResult.stopped`): "timeout" (the agent's wall-clock kill or ours, or SIGXCPU / SIGKILL after
its CPU seconds), "output" (past a cap), "memory" (the cgroup OOM-killed a process, or it ended with Python's
`MemoryError` under RLIMIT_AS), "signal", "exit". The exit status comes from the agent's trailer (from Docker when
the agent itself is gone, e.g. OOM-killed: then the container is removed).

Leftovers: containers carry the label `selfplay.sandbox=1` and `selfplay.sandbox.owner=HOST:PID:START`. `close()`
removes the pool. If the process dies without `close()`: the agent ends its run at the deadline and exits when its
stream closes (or after `TTL_S` without a job), and the next `DockerSandbox` made on this host removes every
container of an owner that is gone. By hand: `docker rm -f $(docker ps -aq --filter label=selfplay.sandbox)`.

What this does NOT protect against:
- kernel bugs: containers share the host's kernel; Docker's default seccomp profile blocks some syscalls, not most;
  a kernel bug that gives a program root in the container also gives it the agent's capabilities and the next runs
  of that container;
- side channels (timing, cache, Spectre-class) and kernel-wide information /proc and /sys show (uptime, load, CPU
  and memory totals, kernel version, the cgroup's own counters, which also carry over between runs of a container);
- the host's CPU: no CPU quota, a run may use every core until its deadline;
- the Docker daemon: whoever can talk to it is root on the host; a flood of runs loads dockerd and containerd;
- exhaustion of kernel-wide tables (inodes, file handles) by many runs at once;
- anything readable in the image: it is public, read-only and visible to the program (the agent's source too).
"""

import json
import logging
import math
import re
import secrets
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

from sandboxes import Limits, RunResult, Sandbox, SandboxError, Stop, finished

log = logging.getLogger(__name__)

IMAGE = "selfplay-sandbox:bookworm"
LABEL = "selfplay.sandbox"
SCRATCH = "/tmp"
ENV = {"PATH": "/usr/bin:/bin", "HOME": SCRATCH, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
TRAILER = re.compile(rb"\0sandbox: end ([0-9a-f]{32}) status=(\d+) cpu=(\d+\.\d+) oom=(\d+) timeout=([01]) clean=([01])\n\Z")
TRAILER_MAX = 128  # bytes: the longest trailer the agent writes
TTL_S = 1800  # a warm agent that gets no job in this time exits
GRACE_S = 5  # past the deadline, a run whose agent has not reported is killed with its container
MAX_RUNS = 100  # a container serves at most this many runs, then is removed
NO_IPC = {"kernel.shmmni": "0", "kernel.msgmni": "0", "kernel.sem": "0 0 0 0", "fs.mqueue.queues_max": "0"}
ATTEMPTS = 3  # tries to start a container, or to get a run through one, before SandboxError
START_DAEMON = "start the Docker daemon (`dockerd > /var/log/dockerd.log 2>&1 &`, or `systemctl start docker`)"

# The agent: the container's pid 1 (python3 -I -S -c AGENT TTL_S), root with only AGENT_CAPS. Protocol on its stdin,
# once per run: 8 bytes of header length, the JSON header {argv, env, files: [[name, size]], stdin: size, rlimits:
# [[resource, soft, hard]], wall_s, nonce}, the files' bytes in order, then the program's stdin (size bytes). After the
# run it writes END(nonce) to stdout and the trailer to stderr; then waits for the next job, or exits (on EOF, after
# TTL_S without a job, or when the reset was not clean).
AGENT_CAPS = ["SETUID", "SETGID", "SETPCAP", "KILL", "DAC_OVERRIDE", "FOWNER"]
AGENT = r"""
import ctypes, json, os, resource, select, shutil, signal, sys, time

signal.signal(signal.SIGINT, signal.SIG_DFL)  # as pid 1, a signal without handler from inside is dropped
NOBODY, SCRATCH = 65534, "/tmp"
libc = ctypes.CDLL(None, use_errno=True)
LAST_CAP = int(open("/proc/sys/kernel/cap_last_cap").read())
OOM_FILES = ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events")

class Deadline(Exception):
    pass

def on_alarm(*_):
    raise Deadline

def read_exactly(n):
    chunks = []
    while n:
        chunk = os.read(0, min(n, 1 << 20))
        if not chunk:
            os._exit(0)  # our end closed the channel
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)

def oom_kills():
    for path in OOM_FILES:
        try:
            with open(path) as f:
                return int(dict(line.split() for line in f).get("oom_kill", 0))
        except (OSError, ValueError):
            pass
    return 0

def program(job, stdin):
    # In the forked child: no way back to the agent's powers, then the program.
    for cap in range(LAST_CAP + 1):
        if libc.prctl(24, cap, 0, 0, 0):  # PR_CAPBSET_DROP: no execve can ever grant it again
            raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")  # the OOM killer takes the program's processes, not the agent (raising needs no privilege)
    os.setsid()  # its own process group: killpg(0) reaches only the run
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)  # every uid non-zero: the permitted and effective capabilities are gone
    os.chdir(SCRATCH)
    for name, data in job["files"]:
        if os.path.dirname(name):
            os.makedirs(os.path.dirname(name), exist_ok=True)
        with open(name, "wb") as f:
            f.write(data)
    os.dup2(stdin, 0)
    os.close(stdin)
    for name, soft, hard in job["rlimits"]:
        resource.setrlimit(getattr(resource, name), (soft, hard))
    for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGALRM, signal.SIGINT):
        signal.signal(s, signal.SIG_DFL)
    os.execvpe(job["argv"][0], job["argv"], job["env"])

def reset():
    # Kill and reap every other process of the container, empty the scratch dir; True when all of it worked.
    give_up = time.monotonic() + 5
    while True:
        try:
            os.kill(-1, signal.SIGKILL)  # every process but pid 1, this agent
        except ProcessLookupError:
            break  # none left, zombies included: every one was reaped
        reaped = False
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                reaped = True
        except ChildProcessError:
            pass
        if time.monotonic() > give_up:
            return False
        if not reaped:
            time.sleep(0.001)
    if [p for p in os.listdir("/proc") if p.isdigit()] != ["1"]:
        return False
    try:
        os.chmod(SCRATCH, 0o700)
        for entry in os.listdir(SCRATCH):
            path = os.path.join(SCRATCH, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        for attr in os.listxattr(SCRATCH):
            os.removexattr(SCRATCH, attr)
        st, fs = os.lstat(SCRATCH), os.statvfs(SCRATCH)
        return (os.listdir(SCRATCH) == [] and (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (NOBODY, NOBODY, 0o700)
                and fs.f_bfree == fs.f_blocks)
    except OSError:
        return False

signal.signal(signal.SIGALRM, on_alarm)
while select.select([0], [], [], int(sys.argv[1]))[0]:  # no job in TTL_S: the pool that made this container is gone
    job = json.loads(read_exactly(int.from_bytes(read_exactly(8), "big")))
    job["files"] = [(name, read_exactly(size)) for name, size in job["files"]]
    stdin = os.memfd_create("stdin")
    data = read_exactly(job["stdin"])
    while data:
        data = data[os.write(stdin, data):]
    os.lseek(stdin, 0, os.SEEK_SET)
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu, oom, timeout, status = cpu.ru_utime + cpu.ru_stime, oom_kills(), 0, None
    signal.setitimer(signal.ITIMER_REAL, max(job["wall_s"], 0.001))
    try:
        pid = os.fork()
        if pid == 0:
            try:
                signal.setitimer(signal.ITIMER_REAL, 0)
                program(job, stdin)
            except BaseException as error:
                os.write(2, ("sandbox: cannot run %r: %s\n" % (job["argv"][0], error)).encode())
            os._exit(127)
        while status is None:
            got, waited = os.waitpid(-1, 0)
            if got == pid:
                status = waited
        signal.setitimer(signal.ITIMER_REAL, 0)
    except Deadline:
        timeout = int(status is None)
    os.close(stdin)
    clean = reset()
    code = os.waitstatus_to_exitcode(status) if status is not None else -signal.SIGKILL
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    os.write(1, b"\0sandbox: end %s\n" % job["nonce"].encode())
    os.write(2, b"\0sandbox: end %s status=%d cpu=%.6f oom=%d timeout=%d clean=%d\n" % (
        job["nonce"].encode(), code if code >= 0 else 128 - code, usage.ru_utime + usage.ru_stime - cpu,
        oom_kills() - oom, timeout, clean))
    if not clean:
        os._exit(1)
"""


@dataclass
class Warm:
    """A started container waiting for its next job, with the attach stream it gets its jobs on."""

    id: str
    last: float  # when it started, or finished its last run
    attached: object = None
    sock: socket.socket | None = None
    runs: int = 0

    def close(self) -> None:
        if self.attached is not None:
            self.attached.close()
            self.sock.close()
            self.attached = self.sock = None


def container_limits(limits: Limits) -> Limits:
    """The part of `limits` fixed when a container is made: runs with equal such parts can share a pool."""
    return replace(limits, wall_s=0.0, output_bytes=0)


DOCKER_ULIMITS = {"RLIMIT_FSIZE": "fsize", "RLIMIT_NOFILE": "nofile", "RLIMIT_CORE": "core"}  # CPU: the agent's adds up


def rlimits(limits: Limits) -> list[tuple[str, int, int]]:
    """(resource, soft, hard) for the program; the agent sets them, Docker's ulimits set some for the agent too."""
    cpu = max(1, math.ceil(limits.cpu_s))
    return [("RLIMIT_CPU", cpu, cpu + 1), ("RLIMIT_AS", limits.memory_bytes, limits.memory_bytes),
            ("RLIMIT_FSIZE", limits.file_bytes, limits.file_bytes),
            ("RLIMIT_NOFILE", limits.open_files, limits.open_files), ("RLIMIT_CORE", 0, 0)]


def job(argv: list[str], files: Mapping[str, str | bytes] | None, stdin: bytes, limits: Limits, nonce: str,
        wall_s: float) -> bytes:
    """What the agent reads on its stdin for one run; ValueError for a file name that leaves the scratch dir."""
    contents = []
    for name, content in (files or {}).items():
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
            raise ValueError(f"file names must be relative and stay in the scratch dir: {name!r}")
        contents.append((name, content.encode() if isinstance(content, str) else content))
    header = json.dumps({
        "argv": argv, "env": {**ENV, "PWD": SCRATCH}, "files": [[name, len(data)] for name, data in contents],
        "stdin": len(stdin), "rlimits": rlimits(limits), "wall_s": wall_s, "nonce": nonce,
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
        self.busy: dict[Limits, int] = {}
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
        """A started container for `limits`, attached, after up to ATTEMPTS tries; SandboxError saying what to do."""
        host_config = self.client.api.create_host_config(
            network_mode="none", ipc_mode="none", read_only=True, cap_drop=["ALL"], cap_add=AGENT_CAPS,
            security_opt=["no-new-privileges"], pids_limit=limits.processes, mem_limit=limits.memory_bytes,
            memswap_limit=limits.memory_bytes, log_config=docker.types.LogConfig(type="none"), sysctls=NO_IPC,
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
                    self.image, ["/usr/bin/python3", "-I", "-S", "-c", AGENT, str(TTL_S)], user="0:0",
                    working_dir="/", environment=ENV, hostname="sandbox", stdin_open=True,  # + StdinOnce
                    labels={LABEL: "1", f"{LABEL}.owner": self.owner}, host_config=host_config,
                )["Id"]
                warm = Warm(cid, time.monotonic())
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
                    warm.close()
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

    def discard(self, warm: Warm) -> None:
        warm.close()
        self.remove(warm.id)

    # --- the pool ------------------------------------------------------------------------------------------------

    def refill(self) -> None:
        """Background thread: keep `pool_size` containers (warm or in a run) for the latest run's limits, drop others."""
        while True:
            with self.lock:
                while not self.closed and self.count(self.want) >= self.pool_size and (
                        self.warm.keys() <= {self.want}):
                    self.lock.wait()
                if self.closed:
                    return
                want = self.want
                stale = [w for key, ws in self.warm.items() if key != want for w in ws]
                self.warm = {want: self.warm.get(want, [])}
                enough = self.count(want) >= self.pool_size
            for w in stale:
                self.discard(w)
            if enough:
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
                    self.warm.setdefault(want, []).append(made)
            if not keep:
                self.discard(made)

    def count(self, key: Limits) -> int:
        """Containers for `key` warm or in a run (they come back): call with the lock held."""
        return len(self.warm.get(key, [])) + self.busy.get(key, 0)

    def take(self, limits: Limits) -> Warm:
        key = container_limits(limits)
        with self.lock:
            if self.closed:
                raise SandboxError("this DockerSandbox is closed")
            self.want = key
            ready = self.warm.get(key, [])
            taken = ready.pop() if ready else None  # the most recently used: its pages are warm
            self.busy[key] = self.busy.get(key, 0) + 1
            self.lock.notify_all()
        if taken is not None and time.monotonic() - taken.last > TTL_S - 60:
            self.discard(taken)  # its agent is about to give up waiting
            taken = None
        try:
            return taken or self.start_container(key)
        except BaseException:
            self.give_back(key, None)
            raise

    def give_back(self, key: Limits, warm: Warm | None) -> None:
        """After a run: `warm` (a container whose reset was clean) back into the pool, or removed; None: it is gone."""
        with self.lock:
            self.busy[key] -= 1
            keep = warm is not None and not self.closed and key == self.want and warm.runs < MAX_RUNS and (
                len(self.warm.get(key, [])) < self.pool_size)
            if keep:
                warm.last = time.monotonic()
                self.warm.setdefault(key, []).append(warm)
            self.lock.notify_all()
        if warm is not None and not keep:
            self.discard(warm)

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
            self.discard(w)
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
        job(argv, files, stdin, limits, "0" * 32, 0.0)  # ValueError before a container is taken
        key = container_limits(limits)
        failure = ""
        for _ in range(ATTEMPTS):
            container = self.take(limits)
            start = time.monotonic()
            nonce = secrets.token_hex(16)
            payload = job(argv, files, stdin, limits, nonce, limits.wall_s - (time.monotonic() - start))
            keep = False
            try:
                out, err, killed, ended = self.stream(container, payload, limits, start, nonce)
                trailer = TRAILER.search(err) if ended else None
                status = oom_killed = None
                if trailer is None and killed is None:  # the agent is gone: how did its container end?
                    status = self.client.api.wait(container.id, timeout=GRACE_S)["StatusCode"]
                    oom_killed = status == 137 and self.client.api.inspect_container(container.id)["State"]["OOMKilled"]
                keep = trailer is not None and trailer[6] == b"1" and killed is None
            except (docker.errors.DockerException, requests.RequestException) as error:
                raise SandboxError(f"Docker failed during a run: {error}. Check `docker info`") from None
            finally:
                if keep:
                    container.runs += 1
                self.give_back(key, container if keep else None)
                if not keep:
                    self.discard(container)
            if trailer is not None or killed or oom_killed or out or err:
                return self.result(status, bytes(out), bytes(err), killed, bool(oom_killed), limits,
                                   wall_s=time.monotonic() - start)
            failure = f"exit {status}"  # the agent never got to the program
        raise SandboxError(f"the Docker sandbox could not start the program in {ATTEMPTS} containers ({failure})")

    def stream(self, container: Warm, payload: bytes, limits: Limits, start: float, nonce: str
               ) -> tuple[bytearray, bytearray, Stop | None, bool]:
        """Send the job, read both streams until the agent's end of the run (ended), a cap or the deadline (killed)."""
        out, err = bytearray(), bytearray()
        end_out = b"\0sandbox: end %s\n" % nonce.encode()
        caps = {1: (out, limits.output_bytes + len(end_out)), 2: (err, limits.output_bytes + TRAILER_MAX)}
        done = {1: False, 2: False}
        frames = bytearray()  # Docker's multiplexed stream: 8-byte header (stream, 0, 0, 0, size) + payload
        sent, killed = 0, None
        sock = container.sock
        sock.setblocking(False)
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while killed is None and not (done[1] and done[2]):
                left = start + limits.wall_s + GRACE_S - time.monotonic()
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
                        buffer, cap = caps.get(frames[0], (None, 0))
                        if buffer is not None and not done[frames[0]]:
                            buffer += frames[8:8 + size]
                            if frames[0] == 1:
                                done[1] = out.endswith(end_out)
                            else:
                                done[2] = (trailer := TRAILER.search(err, max(0, len(err) - TRAILER_MAX))) is not None \
                                    and trailer[1] == nonce.encode()
                            if len(buffer) > cap and not done[frames[0]]:
                                del buffer[cap:]
                                killed = "output"
                        elif buffer is not None:
                            killed = killed or "output"  # bytes after the end: never ours to keep
                        del frames[:8 + size]
        ended = done[1] and done[2] and not frames
        if done[1]:
            del out[-len(end_out):]
        return out, err, killed, ended

    @staticmethod
    def result(status: int | None, out: bytes, err: bytes, killed: Stop | None, oom_killed: bool, limits: Limits,
               *, wall_s: float) -> RunResult:
        trailer = TRAILER.search(err)
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
            raise SandboxError(f"the Docker sandbox's agent was killed from outside (exit {status}): is dockerd "
                               f"healthy? {err.decode(errors='replace')[-300:]}")
        exit_code, sig = (status, None) if status <= 128 else (None, status - 128)
        return finished(exit_code, sig, out, err, limits=limits, wall_s=wall_s, cpu_s=cpu_s, oom=oom)
