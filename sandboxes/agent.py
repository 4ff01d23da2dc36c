"""The trusted agent of a reused sandbox (a Docker container, or a bubblewrap sandbox when we are root): pid 1 of
its pid namespace, with only the capabilities its work needs. It runs jobs from its stdin one at a time, each as a
fresh unprivileged program, and resets the sandbox after each. The sandbox's own python3 runs it (`python3 -I -S
agent.py TTL_S`: bwrap binds this file read-only, Docker passes its source with -c); stdlib only, plus
`sandboxes/spawn.c` built, where bwrap binds it at /spawn.so. We import `seccomp_filter`, `set_off_unix_gc` and
SPAWN_LIBRARY.

Protocol on stdin, once per run: 8 bytes of header length, the JSON header {argv, env, files: [[name, size]],
stdin: size, rlimits: [[resource, soft, hard]], wall_s, nonce}, the files' bytes in order, then the program's stdin
(size bytes). The program inherits the agent's stdout and stderr. After the run, once every process of it is gone,
the agent writes END(nonce) to stdout and the trailer (nonce, exit status, CPU time of the run's processes, the
memory cgroup's OOM kills during it, timeout, and `reset=ok` or what the reset could not undo) to stderr; then it
waits for the next job, or exits: on EOF, after TTL_S without a job, or when the reset was not clean.

At start it empties its capability bounding and inheritable sets, which its children inherit, installs a seccomp
filter (`seccomp_filter`: no keyrings, no io_uring, no sockets but unix, IPv4/6 TCP, UDP and ping, netlink route and
diag, no IPv6 flow labels), closes every fd but 0-2, and makes the scratch dir (its cwd) belong to 65534 (mode 0700).
For each job it writes the files into the scratch dir (owned by 65534, as the program's own would be) and starts the
program: oom_score_adj 1000 (the OOM killer takes it, not the agent), its own session, no supplementary groups, uid:gid
65534:65534 (every capability is gone, and with no_new_privs and an empty bounding set none can come back), every signal
at its default, `stdin` from a memfd, the job's hard rlimits and environment. The agent never changes its own ids: that
would clear the parent-death signal bwrap set on it. The agent waits for it, reaping every orphan, until it exits or the
wall deadline; then the reset: SIGKILL to every
process but itself (kill -1, repeated, reaping, until the kernel finds none left in the pid namespace, zombies
included: uid 65534 cannot signal the agent); stdout and stderr given back the status flags and pipe size they had,
and every lock on them released (a program shares them, as open pipes); the scratch dir emptied (its mode, owner,
xattrs and inode flags too) and checked empty with all its blocks free; and a check that the network namespace holds
no more sockets than at the start (sockets that only fds in flight keep alive are freed by setting off the kernel's
unix garbage collector).

It starts it through spawn.c's `selfplay_spawn` where that loaded: a child that shares the agent's memory until its
exec and makes only system calls. A fork (`program`, where it did not) copies the agent's page tables and
write-protects its memory: the exec tears the copy down, and the agent pays a page fault for every page it writes
afterwards (~170 a run); with the Python the child runs, ~1.1 ms of CPU a run more on a 2-core EPYC VM. Either way
the agent's per-run work is lean: the kernel's counters read with pread on fds opened once, shutil's imports (bz2,
lzma, zlib) left out.
"""

import ctypes
import fcntl
import json
import os
import resource
import select
import signal
import stat
import struct
import sys
import time

NOBODY, SCRATCH = 65534, "/tmp"
LIBC = ctypes.CDLL(None, use_errno=True)
# the sandbox's CPU use where it has a cgroup of its own (Docker): v1 in ns, or v2's first line "usage_usec N"
CPU_FILES = ("/sys/fs/cgroup/cpuacct/cpuacct.usage", "/sys/fs/cgroup/cpu.stat")
OOM_FILES = ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events")
SPAWN_LIBRARY = "/spawn.so"  # sandboxes/spawn.c built, where the backend binds it (bubblewrap)
SPAWN = None  # its selfplay_spawn, once loaded
FOUND = {}  # (name, PATH): the file execvpe would run (`executable`)
OPEN = {}  # fds of the files above and of /proc/net/sockstat, opened at the agent's start (see `opened`)
PR_CAPBSET_DROP = 24
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
F_SETSIG, F_GETSIG, F_OFD_SETLK, F_SETPIPE_SZ, F_GETPIPE_SZ = 10, 11, 37, 1031, 1032
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS = 0x80086601, 0x40086602
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
SECCOMP_RET_ALLOW, SECCOMP_RET_EPERM = 0x7FFF0000, 0x00050001
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06
X32 = 0x40000000
# By audit arch: (syscalls that fail with EPERM, socket and socketpair, setsockopt). The kernel's keyrings (add_key,
# request_key, keyctl) are not namespaced enough: a uid's user keyring lives as long as its user namespace, so a run
# could leave a key for the next one. io_uring (setup, enter, register) would make sockets and set options past this
# filter, and i386's socketcall hides its arguments from it: they fail too.
IO_URING = (425, 426, 427)
SYSCALLS = {
    0xC000003E: ((248, 249, 250, *IO_URING, *(X32 | nr for nr in (248, 249, 250, *IO_URING))),  # x86_64, x32
                 (41, 53, X32 | 41, X32 | 53), (54, X32 | 54, X32 | 541)),
    0x40000003: ((286, 287, 288, *IO_URING, 102), (359, 360), (366,)),  # i386
    0xC00000B7: ((217, 218, 219, *IO_URING), (198, 199), (208,)),  # aarch64
}
# The sockets a program may make: family -> protocols (None: any). AF_VSOCK, for one, is in no namespace: it reaches
# the host and the other sandboxes; netlink's uevents show the host's devices; a protocol not built in makes a modular
# kernel load its module. setsockopt(IPPROTO_IPV6, IPV6_FLOWLABEL_MGR) fails: a flow label lingers after its socket.
SOCKETS = {
    1: None,  # AF_UNIX
    2: (0, 1, 6, 17),  # AF_INET: default, ICMP (ping sockets), TCP, UDP
    10: (0, 6, 17, 58),  # AF_INET6: default, TCP, UDP, ICMPv6
    16: (0, 4),  # AF_NETLINK: route, sock_diag
}
IPPROTO_IPV6, IPV6_FLOWLABEL_MGR = 41, 32


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


def opened(paths):
    """An fd on the first of `paths` that opens, or None. The kernel makes such a file's text anew on each pread at 0,
    so the agent opens it once (an open per run cost ~0.05 ms)."""
    for path in paths:
        try:
            return os.open(path, os.O_RDONLY)
        except OSError:
            pass
    return None


def text(fd):
    return os.pread(fd, 4096, 0).decode()


def oom_kills():
    if OPEN["oom"] is None:
        return 0
    try:
        return int(dict(line.split() for line in text(OPEN["oom"]).splitlines()).get("oom_kill", 0))
    except ValueError:
        return 0


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def cpu_seconds():
    """CPU seconds the sandbox's processes but this agent have used: by its cgroup where it has one (every process
    counts), else by the children reaped (a child the kernel reaps because its parent ignores SIGCHLD is missed)."""
    if OPEN["cpu"] is not None:
        agent, words = resource.getrusage(resource.RUSAGE_SELF), text(OPEN["cpu"]).split("\n", 1)[0].split()
        return (int(words[0]) / 1e9 if len(words) == 1 else int(words[1]) / 1e6) - agent.ru_utime - agent.ru_stime
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return children.ru_utime + children.ru_stime


def drop_inheritable_capabilities():
    """Empty the bounding and inheritable sets: no execve of ours or our children's can ever grant a capability
    again (the agent keeps the ones it holds)."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0):
            raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")
    header, data = CapHeader(_LINUX_CAPABILITY_VERSION_3, 0), (CapData * 2)()
    if LIBC.capget(ctypes.byref(header), data):
        raise OSError(ctypes.get_errno(), "capget")
    for half in data:
        half.inheritable = 0
    if LIBC.capset(ctypes.byref(header), data):
        raise OSError(ctypes.get_errno(), "capset")


def seccomp_filter():
    """The seccomp BPF program (struct sock_filter[], as bwrap's --seccomp reads it) that fails what SYSCALLS and
    SOCKETS rule out with EPERM and allows everything else."""
    arch, nr, args = 4, 0, (16, 24, 32)  # offsets in struct seccomp_data (an argument's low half: little-endian)
    lines = [("ld", arch)] + [("jeq", a, f"arch {a:x}") for a in SYSCALLS] + [("ret", SECCOMP_RET_ALLOW)]
    for a, (denied, socket, setsockopt) in SYSCALLS.items():
        lines += [f"arch {a:x}", ("ld", nr)] + [("jeq", n, "deny") for n in denied] + [
            ("jeq", n, "socket") for n in socket] + [("jeq", n, "setsockopt") for n in setsockopt] + [
            ("ret", SECCOMP_RET_ALLOW)]
    lines += ["socket", ("ld", args[0])] + [
        ("jeq", family, "allow" if protocols is None else f"family {family}") for family, protocols in SOCKETS.items()
    ] + [("ret", SECCOMP_RET_EPERM)]
    for family, protocols in SOCKETS.items():
        if protocols is not None:
            lines += [f"family {family}", ("ld", args[2])] + [("jeq", p, "allow") for p in protocols] + [
                ("ret", SECCOMP_RET_EPERM)]
    lines += ["setsockopt", ("ld", args[1]), ("jeq", IPPROTO_IPV6, "ipv6"), ("ret", SECCOMP_RET_ALLOW),
              "ipv6", ("ld", args[2]), ("jeq", IPV6_FLOWLABEL_MGR, "deny"), ("ret", SECCOMP_RET_ALLOW)]
    lines += ["allow", ("ret", SECCOMP_RET_ALLOW), "deny", ("ret", SECCOMP_RET_EPERM)]
    at, code = {}, []
    for line in lines:
        if isinstance(line, str):
            at[line] = len(code)
        else:
            code.append(line)
    op = {"ld": BPF_LD_W_ABS, "jeq": BPF_JEQ_K, "ret": BPF_RET_K}
    return b"".join(struct.pack("=HBBI", op[kind], at[to[0]] - i - 1 if to else 0, 0, k)
                    for i, (kind, k, *to) in enumerate(code))  # a jump counts from the next instruction


def install_seccomp_filter():
    """Install seccomp_filter on the agent, so on every program it starts (no_new_privs is set: no privilege needed)."""
    program = ctypes.create_string_buffer(seccomp_filter())
    fprog = struct.pack("HP", len(program.raw) // 8, ctypes.addressof(program))  # struct sock_fprog
    if LIBC.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.c_char_p(fprog), 0, 0):
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


def executable(name, path):
    """The file execvpe would run for `name`, found here (before the fork) rather than in the child; remembered, as
    the directories on PATH are the system's, which no program can write."""
    if "/" in name:
        return name
    if (name, path) not in FOUND:
        candidates = [os.path.join(directory, name) for directory in path.split(":")]
        FOUND[name, path] = next((candidate for candidate in candidates
                                  if os.path.isfile(candidate) and os.access(candidate, os.X_OK)), name)
    return FOUND[name, path]  # `name` itself: execve fails with ENOENT, reported like any failure to start


def write_files(files):
    """The job's files, written into the scratch dir (empty: no link to follow) and given to 65534, as the program's
    own would be."""
    for name, data in files:
        parts = name.split("/")
        for end in range(1, len(parts)):
            directory = "/".join(parts[:end])
            if not os.path.isdir(directory):
                os.mkdir(directory)
                os.chown(directory, NOBODY, NOBODY)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        try:
            os.fchown(fd, NOBODY, NOBODY)
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)


def spawned(path, argv, env, stdin, rlimits):
    """The program started by SPAWN (`sandboxes/spawn.c`: the forked child's steps, in a child that shares our
    memory); its pid. OSError when it could not start (its child, if any, exited with 127)."""
    strings = lambda items: (ctypes.c_char_p * (len(items) + 1))(*items, None)
    envp = [os.fsencode(key) + b"=" + os.fsencode(value) for key, value in env.items()]
    resources = (ctypes.c_int * len(rlimits))(*(limit for limit, _, _ in rlimits))
    limits = (ctypes.c_uint64 * (2 * len(rlimits)))(*(value for _, soft, hard in rlimits for value in (soft, hard)))
    error = ctypes.c_int(0)
    pid = SPAWN(os.fsencode(path), strings([os.fsencode(arg) for arg in argv]), strings(envp), stdin, len(rlimits),
                resources, limits, ctypes.byref(error))
    if pid < 0 or error.value:
        raise OSError(error.value, os.strerror(error.value), argv[0])
    return pid


def started(path, argv, env, stdin, rlimits):
    """The program's pid: spawned (`spawned`) where SPAWN loaded, else forked (`program`)."""
    if SPAWN is not None:
        return spawned(path, argv, env, stdin, rlimits)
    pid = os.fork()
    if pid == 0:
        try:
            program(path, argv, env, stdin, rlimits)
        except BaseException as error:
            os.write(2, ("sandbox: cannot run %r: %s\n" % (argv[0], error)).encode())
        os._exit(127)
    return pid


def program(path, argv, env, stdin, rlimits):
    """In the forked child (where SPAWN is missing): no way back to the agent's powers, then the program."""
    oom = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
    os.write(oom, b"1000")  # raising it needs no privilege
    os.close(oom)
    os.setsid()  # its own process group: killpg(0) reaches only the run
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)  # every uid non-zero: the permitted and effective capabilities are gone
    os.dup2(stdin, 0)
    os.close(stdin)
    for limit, soft, hard in rlimits:
        resource.setrlimit(limit, (soft, hard))
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # ignored by Python; the handled SIGALRM resets on exec
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    os.execve(path, argv, env)


def stream_state(fd, pipe):
    """What a program can change of the stdout or stderr it shares with the agent (the same open pipe): its status
    flags (O_NONBLOCK would fail the next program's writes), the owner and signal of its async I/O and, where `pipe`,
    its pipe size. Its flock and OFD locks (they belong to the open pipe, so they outlive the program: a message in
    lock offsets, or a lock the next program waits on) are not read (/proc/self/fdinfo: ~0.1 ms a run) but always
    released."""
    size = fcntl.fcntl(fd, F_GETPIPE_SZ) if pipe else 0
    return fcntl.fcntl(fd, fcntl.F_GETFL), fcntl.fcntl(fd, fcntl.F_GETOWN), fcntl.fcntl(fd, F_GETSIG), size


def restore_streams(states):
    """Put back `states` (stream_state's, at the agent's start: a pipe's has its size) and release every lock; whether
    they are back."""
    changed = {fd: state for fd, state in states.items() if stream_state(fd, pipe=state[3] > 0) != state}
    for fd, (flags, _, _, size) in changed.items():
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        fcntl.fcntl(fd, fcntl.F_SETOWN, 0)
        fcntl.fcntl(fd, F_SETSIG, 0)
        if size:
            fcntl.fcntl(fd, F_SETPIPE_SZ, size)
    for fd in states:
        fcntl.flock(fd, fcntl.LOCK_UN)
        fcntl.fcntl(fd, F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_UNLCK, os.SEEK_SET, 0, 0, 0))  # every byte
    return all(stream_state(fd, pipe=state[3] > 0) == state for fd, state in changed.items())


def sockets():
    """(sockets, TCP sockets in TIME_WAIT) of the sandbox's network namespace."""
    used, tcp = (line.split() for line in text(OPEN["sockets"]).split("\n", 2)[:2])
    return int(used[2]), int(tcp[tcp.index("tw") + 1])


def settled_sockets():
    """The sandbox's own sockets, after those its setup closed are gone: the kernel frees a netlink socket (bwrap's,
    setting up the loopback) a grace period after its close. None is the floor; else a count unchanged for 100 ms."""
    counts, give_up = [sockets()], time.monotonic() + 1
    while counts[-1] != (0, 0) and time.monotonic() < give_up and (len(counts) < 11 or len(set(counts[-11:])) > 1):
        time.sleep(0.01)
        counts.append(sockets())
    return counts[-1]


def set_off_unix_gc():
    """Make the kernel's unix garbage collector run (global: it frees every cycle of sockets kept alive only by fds
    in flight, each of which counts against its uid's limit): send a socket over itself and close it."""
    import _socket

    ends = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    ends[0].sendmsg([b"x"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, ends[0].fileno().to_bytes(4, sys.byteorder))])
    for end in ends:
        end.close()


def sockets_closed(baseline):
    """No socket of the run is left. Sockets whose only fds are in flight in each other's queues live on until the
    kernel's unix garbage collector runs: set it off (send an fd, close both ends) and give it 100 ms."""
    if sockets() == baseline:
        return True
    set_off_unix_gc()
    for _ in range(100):
        time.sleep(0.001)
        if sockets() == baseline:
            return True
    return False


def remove_contents(directory):
    """Remove everything in `directory`, links not followed (shutil.rmtree's imports would make each fork dearer)."""
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if stat.S_ISDIR(os.lstat(path).st_mode):
            remove_contents(path)
            os.rmdir(path)
        else:
            os.unlink(path)


def wipe_scratch():
    """Empty the scratch dir and put back its owner, mode, xattrs and inode flags (new files inherit NOATIME...)."""
    os.chmod(SCRATCH, 0o700)
    remove_contents(SCRATCH)
    for attr in os.listxattr(SCRATCH):
        os.removexattr(SCRATCH, attr)
    fd = os.open(SCRATCH, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if int.from_bytes(fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8))[:4], sys.byteorder):
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, bytes(8))
        flags = int.from_bytes(fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8))[:4], sys.byteorder)
    finally:
        os.close(fd)
    st, fs = os.lstat(SCRATCH), os.statvfs(SCRATCH)
    return (os.listdir(SCRATCH) == [] and (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (NOBODY, NOBODY, 0o700)
            and flags == 0 and fs.f_bfree == fs.f_blocks)


def reset(streams, baseline):
    """Kill and reap every other process of the sandbox, put back what the run could change of what the next run gets
    (`streams`, the scratch dir) and check that it left no socket (`baseline`): "ok", or the first thing left."""
    give_up = time.monotonic() + 5
    while True:
        try:
            os.kill(-1, signal.SIGKILL)  # every process but pid 1, this agent
        except ProcessLookupError:
            break  # none left in the pid namespace, zombies included: the kernel found no process to signal
        reaped = False
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                reaped = True
        except ChildProcessError:
            pass
        if time.monotonic() > give_up:
            return "processes"
        if not reaped:
            time.sleep(0.001)
    try:
        if not restore_streams(streams):
            return "streams"
        if not wipe_scratch():
            return "scratch"
        if not sockets_closed(baseline):
            return "sockets"
    except Exception as error:  # e.g. RecursionError from rmtree of a very deep tree: the sandbox is replaced
        return type(error).__name__
    return "ok"


def serve(job, streams, baseline):
    """Run one job and reset; write END and the trailer; exit when the reset was not clean."""
    files = [(name, read_exactly(size)) for name, size in job["files"]]
    stdin = os.memfd_create("stdin")
    data = read_exactly(job["stdin"])
    while data:
        data = data[os.write(stdin, data):]
    os.lseek(stdin, 0, os.SEEK_SET)
    argv, env = job["argv"], job["env"]
    path = executable(argv[0], env.get("PATH", ""))
    rlimits = [(getattr(resource, name), soft, hard) for name, soft, hard in job["rlimits"]]
    cpu, oom, timeout, status = cpu_seconds(), oom_kills(), 0, None
    signal.setitimer(signal.ITIMER_REAL, max(job["wall_s"], 0.001))
    try:
        try:  # a failure here is the run's (exit status 127, said on stderr), as a forked child's would be
            write_files(files)
        except (OSError, ValueError) as error:
            os.write(2, ("sandbox: cannot write the program's files: %s\n" % error).encode())
            status = 127 << 8  # a wait status
        else:
            try:
                pid = started(path, argv, env, stdin, rlimits)
            except (OSError, ValueError) as error:
                os.write(2, ("sandbox: cannot run %r: %s\n" % (argv[0], error)).encode())
                status = 127 << 8  # a spawned child that exited 127 is reaped by the reset
        while status is None:
            got, waited = os.waitpid(-1, 0)
            if got == pid:
                status = waited
        signal.setitimer(signal.ITIMER_REAL, 0)
    except Deadline:
        timeout = int(status is None)
    os.close(stdin)
    reset_left = reset(streams, baseline)
    code = os.waitstatus_to_exitcode(status) if status is not None else -signal.SIGKILL
    cpu = cpu_seconds() - cpu
    os.write(1, b"\0sandbox: end %s\n" % job["nonce"].encode())
    os.write(2, b"\0sandbox: end %s status=%d cpu=%.6f oom=%d timeout=%d reset=%s\n" % (
        job["nonce"].encode(), code if code >= 0 else 128 - code, max(cpu, 0),
        oom_kills() - oom, timeout, reset_left.encode()))
    if reset_left != "ok":
        os._exit(1)


def main():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as pid 1, a signal without handler from inside is dropped
    signal.signal(signal.SIGALRM, on_alarm)
    drop_inheritable_capabilities()
    install_seccomp_filter()
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # whatever fd the sandbox was started with, no program inherits it
    global SPAWN
    try:
        SPAWN = ctypes.CDLL(SPAWN_LIBRARY).selfplay_spawn
    except OSError:
        pass  # not bound here: each program is forked
    OPEN.update(cpu=opened(CPU_FILES), oom=opened(OOM_FILES), sockets=os.open("/proc/net/sockstat", os.O_RDONLY))
    os.chdir(SCRATCH)  # the programs' cwd
    if os.stat(SCRATCH).st_uid != NOBODY:
        os.chown(SCRATCH, NOBODY, NOBODY)
    os.chmod(SCRATCH, 0o700)
    streams = {fd: stream_state(fd, pipe=stat.S_ISFIFO(os.fstat(fd).st_mode)) for fd in (1, 2)}
    baseline, ttl = settled_sockets(), int(sys.argv[1])
    while select.select([0], [], [], ttl)[0]:  # no job in TTL_S: the pool that made this sandbox is gone
        serve(json.loads(read_exactly(int.from_bytes(read_exactly(8), "big"))), streams, baseline)


if __name__ == "__main__":
    main()
