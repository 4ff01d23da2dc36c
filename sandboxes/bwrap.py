"""The bubblewrap backend: every run in fresh Linux namespaces, under rlimits, with no daemon.

    from sandboxes.bwrap import BwrapSandbox
    BwrapSandbox().run(["python3", "-c", "print(1)"])

One run is `bwrap` (started as uid 65534 through coreutils' `chroot --userspec` when we are root: root's processes
escape RLIMIT_NPROC) with:
- new user, pid, network, mount, IPC, UTS and cgroup namespaces, and no further user namespaces inside; the
  network namespace holds only its own loopback, so no host, LAN, internet or DNS;
- a root holding only read-only binds of /usr (and the /bin, /lib... links into it) and /etc/ld.so.cache, a fresh
  /proc, and a /dev of only null, zero, random, urandom and the fd links (no tty, pts or shm); `/` is remounted
  read-only, so /etc, /dev and $HOME cannot be written;
- the scratch directory /tmp: a private tmpfs of `scratch_bytes`, the cwd and $HOME, holding `files` (copied in
  from memfds: nothing is written on the host's disk, so there is nothing to clean up there);
- uid and gid 65534 inside and out, no capabilities, no_new_privs, a new session (no TIOCSTI into our terminal),
  an environment of only PATH, HOME, LANG, PYTHONDONTWRITEBYTECODE (and PWD, set by bwrap);
- rlimits set by a /bin/sh wrapper, the pid namespace's init (`--as-pid-1`), which then runs the program as its
  child: CPU, address space, processes (the wrapper counts as one), file size, open files, no core files. They are
  hard limits, so the program cannot raise them; as pid 1 the wrapper ignores signals sent from inside, so the
  program cannot kill it; and its exit, after it reaped the program, gives bwrap (and so us) the CPU time used;
- a wall-clock deadline (sandbox start included) and per-stream output caps enforced here, by SIGKILLing bwrap and
  the namespace's init: the kernel then kills every process of the run however it forked, and `run` returns only
  once they are all gone. `--die-with-parent` kills them too if this Python process dies. A killed run's `cpu_s`
  is lost (only bwrap's own is counted).

A run costs about 5.5 ms of CPU more than the bare program (measured on the 2-core reference VM, where spawning any
process costs ~0.7 ms): ~2.3 ms for the least any bwrap does (its exec, a user and a mount namespace, pivot_root),
~1.7 ms for the other namespaces (network ~0.6 ms) and mounts, ~1 ms for the sh init, ~0.5 ms for the drop to 65534.

Why a run stopped (`RunResult.stopped`):
- "timeout": our wall-clock kill, or SIGXCPU / SIGKILL after using its CPU seconds (RLIMIT_CPU);
- "output": our kill after stdout or stderr passed `output_bytes`;
- "memory": a non-zero exit whose stderr ends in Python's `MemoryError` (RLIMIT_AS makes allocation fail). A native
  crash from a failed allocation reads as "signal", and a program can print "MemoryError" itself;
- "signal": killed by a signal. bwrap reports a signal N as exit status 128 + N, as shells do, so a program that
  exits with such a status reads as killed by N. Neither confusion can turn a failure into `ok`;
- "exit": exited on its own.
The trusted wrapper writes `READY` to stderr before the program starts (stripped from `stderr`): without it the
sandbox failed to start and `run` raises SandboxError, so no program can fake an infrastructure failure.

What this does NOT protect against:
- kernel bugs: the program makes syscalls to the host kernel (no seccomp filter), namespaces are not a VM;
- side channels (timing, cache, Spectre-class) and reading the host's kernel-wide information that /proc shows
  (uptime, load, CPU and memory totals, kernel version);
- the host's CPU: a run uses up to all cores until its wall deadline (no cgroup: no CPU share, no priority);
- memory in total: limits are per process, so a run can hold up to `processes * memory_bytes` of address space,
  plus kernel memory no rlimit counts (pipe buffers, sockets, memfds up to `file_bytes` each);
- exhaustion of kernel-wide tables (pids, inodes, file handles) by many runs at once;
- anything readable under /usr: it is the host's, read-only, and visible to the program.
"""

import contextlib
import math
import os
import select
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import PurePosixPath

from sandboxes import Limits, RunResult, Sandbox, SandboxError, Stop, finished

SCRATCH = "/tmp"
NOBODY = 65534
DEVICES = ("null", "zero", "random", "urandom")
READY = b"sandbox: ready\n"
ENV = {"PATH": "/usr/bin:/bin", "HOME": SCRATCH, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
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


class BwrapSandbox(Sandbox):
    """Runs programs under bubblewrap; raises SandboxError at construction when bwrap is missing or cannot work."""

    def __init__(self, *, bwrap: str | None = None) -> None:
        found = shutil.which(bwrap or "bwrap")
        if found is None:
            raise SandboxError(f"bubblewrap (bwrap) is not on PATH: {INSTALL}")
        self.bwrap = found
        self.binds = system_binds()
        # As root, drop to 65534 on the host too: RLIMIT_NPROC does not count root's processes. An exec'd helper
        # rather than Popen(user=...), which forks instead of vforking: forking a trainer holding GBs costs tens of ms
        # per run. `chroot /` (a no-op) with numeric "+ids" and empty --groups: it links only libc and looks up no
        # names, so it starts in half the time setpriv does (which loads NSS modules to read /etc/passwd).
        self.drop: list[str] = []
        if os.geteuid() == 0:
            chroot = shutil.which("chroot") or shutil.which("chroot", path="/usr/sbin:/sbin")
            if chroot is None:
                raise SandboxError("running as root needs chroot to drop privileges: apt-get install coreutils")
            self.drop = [chroot, f"--userspec=+{NOBODY}:+{NOBODY}", "--groups=", "--skip-chdir", "/"]
        try:
            probe = self.run(["true"], limits=Limits(wall_s=30))
        except SandboxError as error:
            raise SandboxError(
                f"{error}\nbwrap needs unprivileged user namespaces (sysctl user.max_user_namespaces > 0, "
                "kernel.unprivileged_userns_clone=1, no AppArmor userns restriction) and the `--disable-userns` "
                "option (bubblewrap >= 0.8)"
            ) from None
        if not probe.ok:
            raise SandboxError(f"bwrap started but `true` failed in it: {probe}")

    def command(self, argv: list[str], files: dict[str, int], limits: Limits) -> list[str]:
        """The bwrap command line; `files` maps a scratch-relative path to the fd holding its content."""
        cmd = [*self.drop, self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
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

    def run(
        self,
        argv: list[str],
        *,
        files: Mapping[str, str | bytes] | None = None,
        stdin: bytes = b"",
        limits: Limits = Limits(),
    ) -> RunResult:
        fds: dict[str, int] = {}
        stdin_fd = None
        try:
            for name, content in (files or {}).items():
                if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
                    raise ValueError(f"file names must be relative and stay in the scratch dir: {name!r}")
                fds[name] = memfd(content.encode() if isinstance(content, str) else content)
            stdin_fd = memfd(stdin) if stdin else subprocess.DEVNULL
            start = time.monotonic()
            proc = subprocess.Popen(
                self.command(argv, fds, limits), stdin=stdin_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=list(fds.values()), env={}, start_new_session=True,  # our terminal's ^C is not for it
            )
        finally:
            for fd in [*fds.values(), stdin_fd]:
                if isinstance(fd, int) and fd >= 0:
                    os.close(fd)
        return self.wait(proc, limits, start)

    def wait(self, proc: subprocess.Popen, limits: Limits, start: float) -> RunResult:
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
            for closable in (proc.stdout, proc.stderr):
                closable.close()
            os.close(pidfd)
        return self.result(proc.returncode, bytes(out), bytes(err), killed, limits,
                           wall_s=time.monotonic() - start, cpu_s=usage.ru_utime + usage.ru_stime)

    @staticmethod
    def result(code: int, out: bytes, err: bytes, killed: Stop | None, limits: Limits, *, wall_s: float,
               cpu_s: float) -> RunResult:
        ready = err.startswith(READY)
        err = err[len(READY):] if ready else err[: limits.output_bytes]
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
