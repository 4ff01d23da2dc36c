"""The bubblewrap backend: runs in Linux namespaces, under rlimits, with no daemon.

    from sandboxes.bwrap import BwrapSandbox
    with BwrapSandbox() as sandbox:
        sandbox.run(["python3", "-c", "print(1)"])

Every run gets:
- new user, pid, network, mount, IPC, UTS and cgroup namespaces, and no further user namespaces inside; the
  network namespace holds only its own loopback, so no host, LAN, internet or DNS;
- a root holding only read-only binds of /usr (and the /bin, /lib... links into it) and /etc/ld.so.cache, a fresh
  /proc, and a /dev of only null, zero, random, urandom and the fd links (no tty, pts or shm); `/` is remounted
  read-only, so /etc, /dev and $HOME cannot be written;
- the scratch directory /tmp: a private tmpfs of `scratch_bytes`, the cwd and $HOME, holding `files` (nothing is
  written on the host's disk, so there is nothing to clean up there);
- uid and gid 65534 inside and out, no capabilities, no_new_privs, a new session (no TIOCSTI into our terminal),
  the agent's seccomp filter (no keyrings, no io_uring, no sockets but unix, IPv4/6 TCP, UDP and ping, netlink
  route and diag: AF_VSOCK is in no namespace; no IPv6 flow labels), an environment of only PATH, HOME, LANG,
  PYTHONDONTWRITEBYTECODE and PWD;
- hard rlimits: CPU, address space, processes, file size, open files, no core files;
- a wall-clock deadline and per-stream output caps; `run` returns only once every process of the run is gone.

Two ways to get there, with the same isolation:

**Reused sandboxes, as root (the default then).** A sandbox serves up to `MAX_RUNS` runs, one at a time, through its
agent (`sandboxes/agent.py`, as in the Docker backend): pid 1 of the sandbox, uid 0 in its user namespace with only
SETUID, SETGID, SETPCAP, KILL, DAC_OVERRIDE, FOWNER and CHOWN there. It starts each program as 65534 with every
capability gone (through `sandboxes/spawn.c`, built on first use and bound at /spawn.so; where no C compiler builds it,
by a fork), and after each run kills every other process in the sandbox, checks that none is left, empties /tmp and puts
back what else a run could change (`sandboxes/agent.py` lists it); a reset that is not clean ends the
sandbox. bwrap runs as uid 65533 on the host (through coreutils' `chroot --userspec`) and waits (`--userns-block-
fd`) while we map two ids into its user namespace, 0 to 65533 and 65534 to 65534 (the kernel lets only root map more
than one), and, through `nsenter`, set its IPC limits to 0 (no SysV or POSIX IPC object can outlive a run) and its
`user.max_user_namespaces` to 0 and its network sysctls as `SANDBOX_SYSCTLS` lists (no TIME_WAIT, TCP metrics,
Fast Open or MPTCP state). The program and the agent have different uids, so the program cannot signal, ptrace or
prlimit the agent. A run costs ~0.2 ms more than the bare program on a 2-core EPYC VM (0.97x its rate; with a
fork of the agent instead of spawn.c, ~1.3 ms and 0.87x: the fork copies the agent's page tables, the exec tears them
down, and ~170 pages the agent writes fault afterwards): `bench/sandbox_exec.py`. Shared between
runs of one sandbox (what the reset does not undo): its namespaces (loopback only, SysV/POSIX IPC off, no TCP
state kept, no socket left), the tmpfs's inode numbers and timestamps, and the agent process; so a run written to
read them learns a little of the run before it (how many processes it made from the pid counter, packets it sent
from /proc/net/snmp, CPU it used from the agent's times in /proc/1/stat). Idle agents (at most `pool_size`) wait for
their next job; `close()` ends them, and so does the end of this process, even by kill -9 (`--die-with-parent`):
with its agent, every process of a sandbox goes.

**A fresh sandbox per run (without root, or `reuse=False`).** One run is `bwrap` (as uid 65534 when we are root:
root's processes escape RLIMIT_NPROC) with `--disable-userns` and, as the pid namespace's init (`--as-pid-1`), a
/bin/sh wrapper that sets the rlimits and runs the program as its child. As pid 1 the wrapper ignores signals sent
from inside, so the program cannot kill it; its exit, after it reaped the program, gives bwrap (and so us) the CPU
time used. The program keeps the signals this process ignores ignored, as subprocess passes them on (SIGPIPE and
SIGXFSZ, which Python ignores, are at their default; spawn.c, in a reused sandbox, sets every signal to its default).
Deadline and caps are enforced here, by SIGKILLing bwrap and the namespace's init: the kernel then kills
every process of the run however it forked. `--die-with-parent` kills them too if this Python process dies. A
killed run's `cpu_s` is lost (only bwrap's own is counted). The wrapper writes `READY` to stderr before the program
starts (stripped from `stderr`): without it the sandbox failed to start and `run` raises SandboxError, so no program
can fake an infrastructure failure. A run costs ~5.5 ms of CPU more than the bare program (0.66x its rate): ~2.3 ms
for the least any bwrap does (its exec, a user and a mount namespace, pivot_root), ~1.7 ms for the other namespaces
(network ~0.6 ms) and mounts, ~1 ms for the sh init, ~0.5 ms for the drop to 65534.

Why a run stopped (`RunResult.stopped`):
- "timeout": the wall-clock kill, or SIGXCPU / SIGKILL after using its CPU seconds (RLIMIT_CPU);
- "output": our kill after stdout or stderr passed `output_bytes`;
- "memory": a non-zero exit whose stderr ends in Python's `MemoryError` (RLIMIT_AS makes allocation fail). A native
  crash from a failed allocation reads as "signal", and a program can print "MemoryError" itself;
- "signal": killed by a signal. A fresh bwrap reports a signal N as exit status 128 + N, as shells do, so there a
  program that exits with such a status reads as killed by N. Neither confusion can turn a failure into `ok`;
- "exit": exited on its own.

What this does NOT protect against:
- kernel bugs: the program makes syscalls to the host kernel (the seccomp filter fails only the few listed above),
  namespaces are not a VM; a kernel bug that gives a program the agent's powers in a reused sandbox also gives it
  that sandbox's next runs;
- side channels (timing, cache, Spectre-class) and reading the host's kernel-wide information that /proc shows
  (uptime, load, CPU and memory totals, kernel version);
- the host's CPU: a run uses up to all cores until its wall deadline (no cgroup: no CPU share, no priority);
- memory in total: limits are per process, so a run can hold up to `processes * memory_bytes` of address space,
  plus kernel memory no rlimit counts (pipe buffers, sockets, memfds up to `file_bytes` each, and the scratch
  tmpfs's inodes: `--size` caps its bytes, not its files, ~1 KiB of kernel memory each until the run ends);
- exhaustion of kernel-wide tables (pids, inodes, file handles) by many runs at once, and of uid 65534's per-user
  limits, which every sandbox's program shares (inotify instances, fds in flight over unix sockets): a run can make
  them fail for runs at the same time;
- kernel-wide counters shared by every network namespace: the TCP ephemeral port a connect gets moves with how many
  connects any sandbox made (a covert channel between runs, like the pid counter);
- a true `cpu_s`: it counts the processes that were waited for, so a program can hide the CPU of children it lets
  the kernel reap (SIGCHLD ignored); RLIMIT_CPU still stops each process;
- anything readable under /usr: it is the host's, read-only, and visible to the program (so is the agent's source).
"""

import contextlib
import json
import logging
import math
import os
import select
import selectors
import shutil
import signal
import subprocess
import time
import weakref
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath

from sandboxes import Limits, RunResult, SandboxError, Stop, finished
from sandboxes.agent import SPAWN_LIBRARY, seccomp_filter, set_off_unix_gc
from sandboxes.agent_client import AGENT_CAPS, AGENT_PATH, ENV, SANDBOX_SYSCTLS, SCRATCH, TTL_S, Streams, rlimits
from sandboxes.agent_pool import AgentPool, AgentSandbox, Warm
from sandboxes.spawn import spawn_library

log = logging.getLogger(__name__)

NOBODY = 65534
AGENT_UID = 65533  # the agent's uid and gid on the host (no account has them): it owns the user namespace
ID_MAP = f"0 {AGENT_UID} 1\n{NOBODY} {NOBODY} 1\n"  # inside -> host: the agent is 0, the program 65534
MAX_RUNS = 1000  # an agent serves at most this many runs, then its sandbox is torn down
DEVICES = ("null", "zero", "random", "urandom")
# bwrap makes the parents of what it mounts with mode 0700, owned by its uid: the agent's, not the program's
OPEN_DIRS = [arg for path in ("/dev", "/etc") for arg in ("--perms", "0755", "--dir", path)]
READY = b"sandbox: ready\n"
SECCOMP_FILTER = seccomp_filter()  # the agent's, for fresh sandboxes (bwrap --seccomp)
INSTALL = "install bubblewrap (apt-get install bubblewrap, or dnf install bubblewrap)"
# Each of the sandbox's mounts costs bwrap a bind, a remount and a parse of /proc/self/mountinfo: a /dev of our own
# with only the common devices is cheaper than `--dev` (which adds a tmpfs, tty, full and a devpts instance).
DEV = [arg for name in DEVICES for arg in ("--dev-bind", f"/dev/{name}", f"/dev/{name}")]
DEV += [arg for link, target in [("fd", ""), ("stdin", "/0"), ("stdout", "/1"), ("stderr", "/2")]
        for arg in ("--symlink", f"/proc/self/fd{target}", f"/dev/{link}")]


def system_binds() -> list[str]:
    """bwrap arguments for the read-only system python3 needs: /usr, the /bin, /lib... links, the loader cache."""
    args = ["--ro-bind", "/usr", "/usr", "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for path in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def limits_script(limits: Limits) -> str:
    """The sh wrapper: set rlimits (soft CPU first: a hard limit below the soft one is refused), say ready, run argv
    as a child (not exec: see the module docstring) and exit with its status."""
    cpu = max(1, math.ceil(limits.cpu_s))
    return (
        f"ulimit -S -t {cpu} && ulimit -H -t {cpu + 1} && ulimit -v {limits.memory_bytes // 1024}"
        f" && ulimit -p {limits.processes} && ulimit -f {limits.file_bytes // 512} && ulimit -n {limits.open_files}"
        f" && ulimit -c 0 && printf '{READY.decode().strip()}\\n' >&2 && \"$@\"; exit $?"
    )


def memfd(data: bytes) -> int:
    """An anonymous in-memory file holding `data`, positioned at its start."""
    fd = os.memfd_create("sandbox")
    with open(fd, "wb", closefd=False) as f:
        f.write(data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def kill_sandbox(pid: int) -> None:
    """SIGKILL bwrap and its child, the pid namespace's init, and return once that init is gone: the kernel lets it go
    only after every other process of the namespace. bwrap is not reaped yet, so its pid cannot have been reused."""
    os.kill(pid, signal.SIGSTOP)  # a stopped bwrap cannot reap its child, so the child's pid stays its own
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = [int(child) for child in f.read().split()]
    pidfds = []
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            pidfds.append(os.pidfd_open(child))
    os.kill(pid, signal.SIGKILL)
    for pidfd in pidfds:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        poll = select.poll()  # not select(): a trainer may hold more than FD_SETSIZE fds
        poll.register(pidfd, select.POLLIN)
        poll.poll()  # a pidfd turns readable when its process has exited
        os.close(pidfd)


def sysctl_script() -> str:
    """sh commands that set SANDBOX_SYSCTLS in the current namespaces, and turn off further user namespaces in the
    current user namespace (a run cannot make one to rearrange its mounts)."""
    settings = {**SANDBOX_SYSCTLS, "user.max_user_namespaces": "0"}
    return "; ".join(f"echo '{value}' > /proc/sys/{key.replace('.', '/')}" for key, value in settings.items())


class Agent(Warm):
    """A reused sandbox: bwrap, whose child is the agent, with the pipes it takes jobs on and reports on; its key is
    its scratch size."""

    def __init__(self, proc: subprocess.Popen, scratch_bytes: int) -> None:
        super().__init__(scratch_bytes)
        self.proc = proc

    def end(self) -> None:
        if self.proc.returncode is None:
            kill_sandbox(self.proc.pid)
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            pipe.close()


class BwrapSandbox(AgentSandbox):
    """Runs programs under bubblewrap; raises SandboxError at construction when bwrap is missing or cannot work.
    `reuse` (default: when we are root) runs them through agents in reused sandboxes, at most `pool_size` kept idle
    (default: one per CPU); `close()` ends the idle ones (later runs start new ones)."""

    name, gone = "bwrap", "the bwrap sandbox's agent died during the run"

    def __init__(self, *, bwrap: str | None = None, reuse: bool | None = None, pool_size: int | None = None) -> None:
        found = shutil.which(bwrap or "bwrap")
        if found is None:
            raise SandboxError(f"bubblewrap (bwrap) is not on PATH: {INSTALL}")
        self.bwrap = found
        self.binds = system_binds()
        root = os.geteuid() == 0
        self.reuse = root if reuse is None else reuse
        if self.reuse and not root:
            raise SandboxError("reused bwrap sandboxes need root, to map the agent's and the program's uids")
        # Drop to an unprivileged uid on the host before bwrap. A fresh sandbox: to 65534, since RLIMIT_NPROC does not
        # count root's processes. A reused one: to the agent's uid, so that it owns the user namespace. An exec'd
        # helper rather than Popen(user=...), which forks instead of vforking: forking a trainer holding GBs costs tens
        # of ms. `chroot /` (a no-op) with numeric "+ids" and empty --groups: it links only libc and looks up no names,
        # so it starts in half the time setpriv does (which loads NSS modules to read /etc/passwd).
        self.drop: list[str] = []
        if root:
            chroot = shutil.which("chroot") or shutil.which("chroot", path="/usr/sbin:/sbin")
            if chroot is None:
                raise SandboxError("running as root needs chroot to drop privileges: apt-get install coreutils")
            uid = AGENT_UID if self.reuse else NOBODY
            self.drop = [chroot, f"--userspec=+{uid}:+{uid}", "--groups=", "--skip-chdir", "/"]
        self.nsenter = shutil.which("nsenter") or shutil.which("nsenter", path="/usr/bin:/bin")
        if self.reuse and self.nsenter is None:
            raise SandboxError("reused bwrap sandboxes need nsenter: apt-get install util-linux")
        start = weakref.WeakMethod(self.start_agent)  # not a reference to self: the finalizer below holds the pool
        self.pool = AgentPool(lambda key: start()(key), size=pool_size or os.cpu_count() or 2, max_runs=MAX_RUNS)
        # bwrap's --die-with-parent fires when the thread that started it ends, not the process: agents outlive the
        # run that starts them, so one thread that lives as long as the sandbox starts them all
        self.starter = ThreadPoolExecutor(1, thread_name_prefix="bwrap-agents")
        weakref.finalize(self, self.pool.end_idle)  # a sandbox dropped without close() ends its agents
        try:
            probe = self.run(["true"], limits=Limits(wall_s=30))
        except SandboxError as error:
            raise SandboxError(
                f"{error}\nbwrap needs user namespaces (sysctl user.max_user_namespaces > 0; without root also "
                "kernel.unprivileged_userns_clone=1 and no AppArmor userns restriction) and bubblewrap >= 0.8"
            ) from None
        if not probe.ok:
            raise SandboxError(f"bwrap started but `true` failed in it: {probe}")

    def run(
        self,
        argv: list[str],
        *,
        files: Mapping[str, str | bytes] | None = None,
        stdin: bytes = b"",
        limits: Limits = Limits(),
    ) -> RunResult:
        if self.reuse:  # the deadline counts the sandbox's start, as a fresh sandbox's does
            return self.run_in_agent(argv, files, stdin, limits, key=limits.scratch_bytes,
                                     rlimits=rlimits(limits, processes=True), start_counts=True)
        return self.run_fresh(argv, files or {}, stdin, limits)

    def close(self) -> None:
        self.pool.end_idle()

    # --- reused sandboxes (as root) -----------------------------------------------------------------------------------

    def start_agent(self, scratch_bytes: int) -> Agent:
        """A new sandbox with its agent; bwrap waits (--userns-block-fd) while we map its uids and set its sysctls."""
        block_read, block_write = os.pipe()
        info_read, info_write = os.pipe()
        caps = [arg for cap in AGENT_CAPS for arg in ("--cap-add", f"CAP_{cap}")]
        library = spawn_library()
        spawn = ["--ro-bind", str(library), SPAWN_LIBRARY] if library else []
        cmd = [*self.drop, self.bwrap, "--unshare-all", "--unshare-user", "--userns-block-fd", str(block_read),
               "--info-fd", str(info_write), "--die-with-parent", "--as-pid-1", "--new-session", "--clearenv",
               "--setenv", "PATH", ENV["PATH"], "--uid", "0", "--gid", "0", *caps, *OPEN_DIRS, *self.binds,
               "--proc", "/proc", *DEV, "--ro-bind", str(AGENT_PATH), "/agent.py", *spawn, "--size", str(scratch_bytes),
               "--tmpfs", SCRATCH, "--remount-ro", "/", "--chdir", "/", "--", "python3", "-I", "-S", "/agent.py",
               str(TTL_S)]
        try:
            proc = self.starter.submit(
                subprocess.Popen, cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=[block_read, info_write], env={}, start_new_session=True).result()
        finally:
            os.close(block_read)
            os.close(info_write)
        agent = Agent(proc, scratch_bytes)
        try:
            with os.fdopen(info_read, "rb") as info:  # bwrap writes it, then closes it
                pid = json.loads(info.read() or b'{"child-pid": null}')["child-pid"]
            if pid is None:
                raise OSError("bwrap exited before it made the namespaces")
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(ID_MAP)
            subprocess.run([self.nsenter, f"--target={pid}", "--user", "--ipc", "--net", "--", "/bin/sh", "-ec",
                            sysctl_script()], env={}, capture_output=True, check=True, timeout=30)
            os.write(block_write, b"1")
        except (OSError, ValueError, KeyError, subprocess.SubprocessError) as error:
            kill_sandbox(proc.pid)
            proc.wait()
            said = getattr(error, "stderr", None) or proc.stderr.read()
            agent.end()
            raise SandboxError(f"bwrap could not start a sandbox: {error}: {said.decode(errors='replace')[-300:]}"
                               ) from None
        finally:
            os.close(block_write)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            os.set_blocking(pipe.fileno(), False)
        return agent

    def vanished(self, agent: Agent) -> tuple[int | None, bool]:
        agent.end()
        return agent.proc.returncode, False

    def exchange(self, agent: Agent, payload: bytes, streams: Streams, deadline: float) -> None:
        streams_of = {agent.proc.stdout.fileno(): 1, agent.proc.stderr.fileno(): 2}
        reading = set(streams_of)
        stdin = agent.proc.stdin.fileno()
        sent = 0
        with selectors.DefaultSelector() as selector:
            selector.register(stdin, selectors.EVENT_WRITE)
            for fd in reading:
                selector.register(fd, selectors.EVENT_READ)
            while streams.killed is None and not streams.ended and reading:
                left = deadline - time.monotonic()
                events = selector.select(left) if left > 0 else []
                if not events:
                    streams.killed = "timeout"
                for key, _ in events:
                    if key.fd == stdin:
                        try:
                            sent += os.write(stdin, payload[sent:sent + (1 << 20)])
                        except BlockingIOError:
                            pass
                        except BrokenPipeError:  # the agent is gone
                            sent = len(payload)
                        if sent >= len(payload):
                            selector.unregister(stdin)
                        continue
                    try:
                        chunk = os.read(key.fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    if chunk:
                        streams.feed(streams_of[key.fd], chunk)
                    else:
                        selector.unregister(key.fd)
                        reading.discard(key.fd)

    # --- a fresh sandbox per run ---------------------------------------------------------------------------------------

    def command(self, argv: list[str], files: dict[str, int], limits: Limits, seccomp: int) -> list[str]:
        """The bwrap command line; `files` maps a scratch-relative path to the fd holding its content, `seccomp` is
        the fd holding SECCOMP_FILTER."""
        cmd = [*self.drop, self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
               "--seccomp", str(seccomp),
               "--as-pid-1", "--new-session", "--clearenv", "--uid", str(NOBODY), "--gid", str(NOBODY), *self.binds,
               "--proc", "/proc", *DEV, "--size", str(limits.scratch_bytes), "--tmpfs", SCRATCH]
        dirs = sorted({str(p) for name in files for p in PurePosixPath(name).parents if str(p) != "."})
        for d in dirs:
            cmd += ["--dir", f"{SCRATCH}/{d}"]
        for name, fd in files.items():
            cmd += ["--file", str(fd), f"{SCRATCH}/{name}"]
        cmd += ["--remount-ro", "/", "--chdir", SCRATCH]
        for key, value in ENV.items():
            cmd += ["--setenv", key, value]
        return [*cmd, "--", "/bin/sh", "-c", limits_script(limits), "sh", *argv]

    def run_fresh(self, argv: list[str], files: Mapping[str, str | bytes], stdin: bytes, limits: Limits) -> RunResult:
        fds: dict[str, int] = {}
        stdin_fd, seccomp = None, memfd(SECCOMP_FILTER)
        try:
            for name, content in files.items():
                if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
                    raise ValueError(f"file names must be relative and stay in the scratch dir: {name!r}")
                fds[name] = memfd(content.encode() if isinstance(content, str) else content)
            stdin_fd = memfd(stdin) if stdin else subprocess.DEVNULL
            start = time.monotonic()
            proc = subprocess.Popen(
                self.command(argv, fds, limits, seccomp), stdin=stdin_fd, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, pass_fds=[*fds.values(), seccomp], env={},
                start_new_session=True,  # our terminal's ^C is not for it
            )
        finally:
            for fd in [*fds.values(), stdin_fd, seccomp]:
                if isinstance(fd, int) and fd >= 0:
                    os.close(fd)
        return self.wait_fresh(proc, limits, start)

    def wait_fresh(self, proc: subprocess.Popen, limits: Limits, start: float) -> RunResult:
        """Read both streams until the run ends, a cap is passed or the deadline comes; then kill and reap."""
        out, err = bytearray(), bytearray()
        buffers = {
            proc.stdout.fileno(): (out, limits.output_bytes),
            proc.stderr.fileno(): (err, limits.output_bytes + len(READY)),
        }
        killed: Stop | None = None
        pidfd = os.pidfd_open(proc.pid)
        try:
            with selectors.DefaultSelector() as selector:
                for fd in [*buffers, pidfd]:
                    os.set_blocking(fd, False)
                    selector.register(fd, selectors.EVENT_READ)
                while selector.get_map() and killed is None:
                    left = start + limits.wall_s - time.monotonic()
                    events = selector.select(left) if left > 0 else []
                    if not events:
                        killed = "timeout"
                    for key, _ in events:
                        chunk = os.read(key.fd, 1 << 16) if key.fd != pidfd else b""
                        if not chunk:  # end of a stream, or the pidfd says bwrap exited
                            selector.unregister(key.fd)
                            continue
                        buffer, cap = buffers[key.fd]
                        buffer += chunk
                        if len(buffer) > cap:
                            del buffer[cap:]
                            killed = "output"
        finally:
            kill_sandbox(proc.pid)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            set_off_unix_gc()  # sockets the run left only in flight still count against uid 65534's limit
            for closable in (proc.stdout, proc.stderr):
                closable.close()
            os.close(pidfd)
        return self.result_fresh(proc.returncode, bytes(out), bytes(err), killed, limits,
                           wall_s=time.monotonic() - start, cpu_s=usage.ru_utime + usage.ru_stime)

    @staticmethod
    def result_fresh(code: int, out: bytes, err: bytes, killed: Stop | None, limits: Limits, *, wall_s: float,
               cpu_s: float) -> RunResult:
        ready = err.startswith(READY)
        err = err[len(READY):] if ready else err[: limits.output_bytes]
        if not ready and killed is None and b"No space left on device" in err:  # bwrap's, copying `files` in
            return RunResult(127, None, "", f"sandbox: cannot run: {err.decode(errors='replace')}", wall_s, cpu_s, "exit")
        if not ready and killed is None:
            raise SandboxError(f"bwrap could not start the sandbox (exit {code}): {err.decode(errors='replace')}")
        exit_code, sig = code, None
        if code > 128:  # bwrap's (and sh's) way of saying "killed by signal code - 128"
            exit_code, sig = None, code - 128
        elif code < 0:  # bwrap itself was killed, not by us (the OOM killer, say)
            exit_code, sig = None, -code
        if killed is not None:
            return RunResult(None, signal.SIGKILL, out.decode(errors="replace"), err.decode(errors="replace"), wall_s,
                             cpu_s, killed)
        return finished(exit_code, sig, out, err, limits=limits, wall_s=wall_s, cpu_s=cpu_s)
