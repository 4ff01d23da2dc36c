"""The trusted agent of a reused sandbox (a Docker container, or a bubblewrap sandbox when we are root): pid 1 of
its pid namespace, with only the capabilities its work needs. It runs jobs from its stdin one at a time, each as a
fresh unprivileged program, and resets the sandbox after each. Not imported: the sandbox's own python3 runs it
(`python3 -I -S agent.py TTL_S`: bwrap binds this file read-only, Docker passes its source with -c); stdlib only.

Protocol on stdin, once per run: 8 bytes of header length, the JSON header {argv, env, files: [[name, size]],
stdin: size, rlimits: [[resource, soft, hard]], wall_s, nonce}, the files' bytes in order, then the program's stdin
(size bytes). The program inherits the agent's stdout and stderr. After the run, once every process of it is gone,
the agent writes END(nonce) to stdout and the trailer (nonce, exit status, CPU time of every process of the run, the
memory cgroup's OOM kills during it, timeout, whether the reset was clean) to stderr; then it waits for the next job,
or exits: on EOF, after TTL_S without a job, or when the reset was not clean.

At start it empties its capability bounding and inheritable sets, which its children inherit, installs a seccomp
filter that fails the keyring syscalls (a uid's user keyring outlives its processes: a run could leave a key for the
next), closes every fd but 0-2, and makes the scratch dir belong to 65534 (mode 0700). For each job it forks the
program: oom_score_adj 1000 (the OOM killer takes it, not the agent), its own session, no supplementary groups,
uid:gid 65534:65534 (every capability is gone, and with no_new_privs and an empty bounding set none can come back),
the files written into the scratch dir (its cwd), `stdin` from a memfd, the job's hard rlimits and environment. The
agent waits for it, reaping every orphan, until it exits or the wall deadline; then the reset: SIGKILL to every
process but itself (kill -1, repeated, reaping, until none is left: uid 65534 cannot signal the agent), a check that
/proc lists only itself; stdout and stderr given back the status flags and pipe size they had (a program shares
them, as open pipes); the scratch dir emptied (its mode, owner, xattrs and inode flags too) and checked empty with
all its blocks free; and a check that the network namespace holds no socket (sockets that only fds in flight keep
alive are freed by setting off the kernel's unix garbage collector).

The child does little Python between fork and exec: each object it touches copies a page of the agent's memory.
"""

import ctypes
import fcntl
import json
import os
import resource
import select
import shutil
import signal
import stat
import sys
import time

NOBODY, SCRATCH = 65534, "/tmp"
OOM_FILES = ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events")
PR_CAPBSET_DROP = 24
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
F_SETSIG, F_SETPIPE_SZ, F_GETPIPE_SZ = 10, 1031, 1032
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS = 0x80086601, 0x40086602
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
SECCOMP_RET_ALLOW, SECCOMP_RET_EPERM = 0x7FFF0000, 0x00050001
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06
# add_key, request_key, keyctl by audit arch: the kernel's keyrings are not namespaced enough (a uid's user keyring
# lives as long as its user namespace), so a run could leave a key for the next one
KEYRING_SYSCALLS = {
    0xC000003E: (248, 249, 250, 0x40000000 | 248, 0x40000000 | 249, 0x40000000 | 250),  # x86_64, x32
    0x40000003: (286, 287, 288),  # i386
    0xC00000B7: (217, 218, 219),  # aarch64
}


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


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_inheritable_capabilities():
    """Empty the bounding and inheritable sets: no execve of ours or our children's can ever grant a capability
    again (the agent keeps the ones it holds)."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0):
            raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")
    header, data = CapHeader(_LINUX_CAPABILITY_VERSION_3, 0), (CapData * 2)()
    if libc.capget(ctypes.byref(header), data):
        raise OSError(ctypes.get_errno(), "capget")
    for half in data:
        half.inheritable = 0
    if libc.capset(ctypes.byref(header), data):
        raise OSError(ctypes.get_errno(), "capset")


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]


def keyring_filter():
    """A seccomp BPF program: EPERM for KEYRING_SYSCALLS of the caller's arch, everything else allowed."""
    arches = list(KEYRING_SYSCALLS)
    blocks = [[(BPF_LD_W_ABS, 0, 0, 0)] + [(BPF_JEQ_K, 0, 0, nr) for nr in KEYRING_SYSCALLS[arch]]
              + [(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW)] for arch in arches]  # each: load nr, match, allow
    head = [(BPF_LD_W_ABS, 0, 0, 4)] + [(BPF_JEQ_K, 0, 0, arch) for arch in arches] + [
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW)]  # load the arch, jump to its block, else allow
    program = head + [insn for block in blocks for insn in block] + [(BPF_RET_K, 0, 0, SECCOMP_RET_EPERM)]
    deny, start = len(program) - 1, len(head)
    for i, block in enumerate(blocks):  # jumps count from the instruction after the jump
        program[1 + i] = (BPF_JEQ_K, start - (2 + i), 0, arches[i])
        for j in range(1, len(block) - 1):
            program[start + j] = (BPF_JEQ_K, deny - (start + j + 1), 0, block[j][3])
        start += len(block)
    return program


def block_keyrings():
    """Install keyring_filter on the agent, so on every program it forks (no_new_privs is set: no privilege needed)."""
    program = keyring_filter()
    filters = (SockFilter * len(program))(*[SockFilter(*insn) for insn in program])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(SockFprog(len(program), filters)), 0, 0):
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


def executable(name, path):
    """The file execvpe would run for `name`, found here (before the fork) rather than in the child."""
    if "/" in name:
        return name
    for directory in path.split(":"):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return name  # execve fails with ENOENT, reported like any failure to start


def program(path, argv, env, files, stdin, rlimits):
    """In the forked child: no way back to the agent's powers, then the program."""
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")  # raising it needs no privilege
    os.setsid()  # its own process group: killpg(0) reaches only the run
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)  # every uid non-zero: the permitted and effective capabilities are gone
    os.chdir(SCRATCH)
    for name, data in files:
        if os.path.dirname(name):
            os.makedirs(os.path.dirname(name), exist_ok=True)
        with open(name, "wb") as f:
            f.write(data)
    os.dup2(stdin, 0)
    os.close(stdin)
    for limit, soft, hard in rlimits:
        resource.setrlimit(limit, (soft, hard))
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # ignored by Python; the handled SIGALRM resets on exec
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    os.execve(path, argv, env)


def stream_state(fd):
    """What a program can change of the stdout or stderr it shares with the agent (the same open pipe): its status
    flags (O_NONBLOCK would fail the next program's writes) and its pipe size."""
    pipe = fcntl.fcntl(fd, F_GETPIPE_SZ) if stat.S_ISFIFO(os.fstat(fd).st_mode) else 0
    return fcntl.fcntl(fd, fcntl.F_GETFL), pipe


def restore_streams(states):
    for fd, (flags, pipe) in states.items():
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        fcntl.fcntl(fd, fcntl.F_SETOWN, 0)
        fcntl.fcntl(fd, F_SETSIG, 0)
        if pipe:
            fcntl.fcntl(fd, F_SETPIPE_SZ, pipe)
    return all(stream_state(fd) == state for fd, state in states.items())


def sockets():
    """(sockets, TCP sockets in TIME_WAIT) of the sandbox's network namespace."""
    with open("/proc/net/sockstat") as f:
        used, tcp = f.readline().split(), f.readline().split()
    return int(used[2]), int(tcp[tcp.index("tw") + 1])


def sockets_closed(baseline):
    """No socket of the run is left. Sockets whose only fds are in flight in each other's queues live on until the
    kernel's unix garbage collector runs: set it off (send an fd, close both ends) and give it 100 ms."""
    if sockets() == baseline:
        return True
    import _socket

    ends = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    ends[0].sendmsg([b"x"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, ends[0].fileno().to_bytes(4, sys.byteorder))])
    for end in ends:
        end.close()
    for _ in range(100):
        time.sleep(0.001)
        if sockets() == baseline:
            return True
    return False


def wipe_scratch():
    """Empty the scratch dir and put back its owner, mode, xattrs and inode flags (new files inherit NOATIME...)."""
    os.chmod(SCRATCH, 0o700)
    for entry in os.listdir(SCRATCH):
        path = os.path.join(SCRATCH, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
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
    (`streams`, the scratch dir) and check that it left no socket (`baseline`); True when all of it worked."""
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
        return restore_streams(streams) and wipe_scratch() and sockets_closed(baseline)
    except Exception:  # e.g. RecursionError from rmtree of a very deep tree: the sandbox is replaced
        return False


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
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu, oom, timeout, status = usage.ru_utime + usage.ru_stime, oom_kills(), 0, None
    signal.setitimer(signal.ITIMER_REAL, max(job["wall_s"], 0.001))
    try:
        pid = os.fork()
        if pid == 0:
            try:
                program(path, argv, env, files, stdin, rlimits)
            except BaseException as error:
                os.write(2, ("sandbox: cannot run %r: %s\n" % (argv[0], error)).encode())
            os._exit(127)
        while status is None:
            got, waited = os.waitpid(-1, 0)
            if got == pid:
                status = waited
        signal.setitimer(signal.ITIMER_REAL, 0)
    except Deadline:
        timeout = int(status is None)
    os.close(stdin)
    clean = reset(streams, baseline)
    code = os.waitstatus_to_exitcode(status) if status is not None else -signal.SIGKILL
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    os.write(1, b"\0sandbox: end %s\n" % job["nonce"].encode())
    os.write(2, b"\0sandbox: end %s status=%d cpu=%.6f oom=%d timeout=%d clean=%d\n" % (
        job["nonce"].encode(), code if code >= 0 else 128 - code, usage.ru_utime + usage.ru_stime - cpu,
        oom_kills() - oom, timeout, clean))
    if not clean:
        os._exit(1)


def main():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as pid 1, a signal without handler from inside is dropped
    signal.signal(signal.SIGALRM, on_alarm)
    drop_inheritable_capabilities()
    block_keyrings()
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # whatever fd the sandbox was started with, no program inherits it
    if os.stat(SCRATCH).st_uid != NOBODY:
        os.chown(SCRATCH, NOBODY, NOBODY)
    os.chmod(SCRATCH, 0o700)
    streams, baseline, ttl = {fd: stream_state(fd) for fd in (1, 2)}, sockets(), int(sys.argv[1])
    while select.select([0], [], [], ttl)[0]:  # no job in TTL_S: the pool that made this sandbox is gone
        serve(json.loads(read_exactly(int.from_bytes(read_exactly(8), "big"))), streams, baseline)


if __name__ == "__main__":
    main()
