"""Both sandbox backends against every hostile program of ../shared/HOSTILE.md (numbered as there), plus the interface.

Each test runs the real backend, and skips, saying why, where one is unusable: `bwrap` as `get_sandbox` makes it
(as root: reused sandboxes with an agent), `bwrap-fresh` (a new bwrap per run, the default when not root), and Docker
with the image of `make sandbox-image`. After every test no process started by the test is alive, no fd (memfd,
pipe, pidfd, socket) is left open, no temp file was made, and no container of ours exists beyond the pool's warm ones
(the autouse `no_leftovers` fixture, which first closes bwrap's pool of idle agents); after a backend's last test,
`close()` leaves no container at all. The 1000-run soak tests are marked slow.
"""

import gc
import logging
import os
import shutil
import signal
import socket
import tempfile
import textwrap
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import docker
import psutil
import pytest

from sandboxes import Limits, RunResult, Sandbox, SandboxError, get_sandbox
from sandboxes.agent_client import SANDBOX_SYSCTLS
from sandboxes.bwrap import READY, BwrapSandbox
from sandboxes.docker import LABEL, DockerSandbox
from sandboxes import spawn
from sandboxes.spawn import SOURCE, spawn_library

SHORT = Limits(wall_s=3, cpu_s=1)


def our_containers(sandbox: DockerSandbox) -> list[dict]:
    return sandbox.client.api.containers(all=True, filters={"label": f"{LABEL}.owner={sandbox.owner}"})


def settle(sandbox: Sandbox | None) -> None:
    """End bwrap's idle agents; wait for Docker's pool to be full again, then drop the SDK's idle keep-alive
    connections (they are sockets), and collect cyclic garbage (a failed connection's socket lives in its exception's
    traceback until then)."""
    gc.collect()
    if isinstance(sandbox, BwrapSandbox):
        sandbox.close()
    if isinstance(sandbox, DockerSandbox):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with sandbox.pool.lock:
                if len(sandbox.pool.idle) >= sandbox.pool_size:  # the refiller is idle
                    break
            time.sleep(0.05)
        sandbox.client.api.close()


@pytest.fixture(scope="module", params=["bwrap", "bwrap-fresh", "docker"])
def sandbox(request):
    try:
        box = BwrapSandbox(reuse=False) if request.param == "bwrap-fresh" else get_sandbox(request.param)
    except SandboxError as error:
        pytest.skip(f"{request.param} is not usable here: {error}")
    yield box
    box.close()
    if isinstance(box, DockerSandbox):
        client = docker.from_env()
        try:
            assert client.api.containers(all=True, filters={"label": f"{LABEL}.owner={box.owner}"}) == []
        finally:
            client.close()


@pytest.fixture(autouse=True)
def no_leftovers(request, tmp_path, monkeypatch):
    """Temp files anyone makes through `tempfile` land in a fresh dir, which must stay empty."""
    box = request.getfixturevalue("sandbox") if "sandbox" in request.fixturenames else None
    temp = tmp_path / "tempfile-tempdir"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    me = psutil.Process()
    settle(box)
    fds, children = me.num_fds(), set(me.children(recursive=True))  # earlier tests' helpers (vLLM's) may live on
    yield
    settle(box)
    assert set(me.children(recursive=True)) <= children
    assert me.num_fds() <= fds  # none left open (an earlier test's helper may close its own meanwhile)
    assert list(temp.iterdir()) == []
    if isinstance(box, DockerSandbox):
        containers = our_containers(box)
        assert len(containers) <= box.pool_size and all(c["State"] == "running" for c in containers)


def py(sandbox: Sandbox, code: str, *args: str, **kwargs) -> RunResult:
    return sandbox.run(["python3", "-c", textwrap.dedent(code), *args], **kwargs)


def alive(token: str) -> list[psutil.Process]:
    """Processes anywhere on the host whose command line holds `token`."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if any(token in arg for arg in p.info["cmdline"] or []):
            found.append(p)
    return found


# --- the interface -------------------------------------------------------------------------------------------------


def test_a_plain_program_gets_its_files_stdin_and_an_exact_result(sandbox):
    code = "import sys; print(open('pkg/data.txt').read(), open('raw.bin', 'rb').read(), sys.stdin.read()); exit(3)"
    result = sandbox.run(["python3", "-c", code], files={"pkg/data.txt": "é", "raw.bin": b"\x00\x01"}, stdin=b"in")
    assert (result.exit_code, result.signal, result.stopped, result.ok) == (3, None, "exit", False)
    assert result.stdout == "é b'\\x00\\x01' in\n" and result.stderr == ""
    assert py(sandbox, "pass").ok


def test_the_given_files_are_the_programs_and_too_many_of_them_fail_the_run(sandbox):
    code = "import os; os.chmod('a/b.txt', 0o600); os.remove('a/b.txt'); os.rmdir('a'); print(os.listdir('.'))"
    assert py(sandbox, code, files={"a/b.txt": "x"}).stdout == "[]\n"
    too_big = py(sandbox, "pass", files={"big": b"x" * 2**21}, limits=Limits(scratch_bytes=2**20))
    assert too_big.exit_code not in (0, None) and "No space left on device" in too_big.stderr
    assert py(sandbox, "pass").ok


def test_a_program_starts_unprivileged_with_default_signals_and_first_in_line_for_the_oom_killer(sandbox):
    result = sandbox.run(["cat", "/proc/self/status", "/proc/self/oom_score_adj"])  # cat itself, not a child of it
    status = dict(line.split(":\t", 1) for line in result.stdout.splitlines()[:-1])
    assert status["Uid"] == status["Gid"] == "65534\t65534\t65534\t65534" and status["Groups"].strip() == "", result
    assert status["SigBlk"] == status["SigCgt"] == "0000000000000000"
    # spawn.c (a reused bwrap) and Docker's agent (started by dockerd) leave nothing ignored; a fresh bwrap passes on
    # what this process ignores, as subprocess does, but SIGPIPE and SIGXFSZ, which Python ignores
    with open("/proc/self/status") as f:
        ours = int(next(line for line in f if line.startswith("SigIgn:")).split()[1], 16)
    fresh = isinstance(sandbox, BwrapSandbox) and not sandbox.reuse
    python_s = 1 << (signal.SIGPIPE - 1) | 1 << (signal.SIGXFSZ - 1)
    assert int(status["SigIgn"], 16) == (ours & ~python_s if fresh else 0), (status["SigIgn"], hex(ours))
    assert {status[cap] for cap in ("CapPrm", "CapEff", "CapBnd")} == {"0000000000000000"}
    if not isinstance(sandbox, BwrapSandbox) or sandbox.reuse:  # a fresh sandbox has no agent to outlive the program
        assert result.stdout.splitlines()[-1] == "1000"


def test_a_program_that_cannot_start_exits_127_saying_why(sandbox):
    result = sandbox.run(["no-such-program"])
    assert (result.exit_code, result.stopped) == (127, "exit") and "no-such-program" in result.stderr, result
    assert py(sandbox, "print('next')").stdout == "next\n"


def test_a_nul_byte_in_an_argument_or_file_name_is_refused_before_anything_runs(sandbox):
    for argv, files in [(["echo", "a\0b"], None), (["true"], {"a\0b": "x"})]:  # a C string would end at the NUL
        with pytest.raises(ValueError):
            sandbox.run(argv, files=files)
    assert py(sandbox, "print('next')").stdout == "next\n"


def test_a_reused_bwrap_sandbox_starts_programs_without_forking_its_agent(sandbox):
    if not isinstance(sandbox, BwrapSandbox) or not sandbox.reuse:
        pytest.skip("reused bwrap sandboxes only")
    if spawn_library() is None:
        pytest.skip("no C compiler here: the agent forks each program")
    assert py(sandbox, "pass").ok
    [agent] = psutil.Process(sandbox.pool.idle[-1].proc.pid).children()
    faults = lambda: int(open(f"/proc/{agent.pid}/stat").read().rsplit(")", 1)[1].split()[7])  # minflt
    assert "/spawn.so" in {m.path for m in agent.memory_maps()}
    before = faults()
    for _ in range(20):
        assert py(sandbox, "pass").ok
    assert faults() - before < 20 * 20  # after a fork, ~170 page faults a run: each page the agent writes is shared


def test_without_a_working_c_compiler_reused_bwrap_agents_fork_and_runs_still_work(monkeypatch, tmp_path, caplog):
    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        pytest.skip("reused bwrap sandboxes need root and bwrap")
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(spawn, "SOURCE", tmp_path / "spawn.c")  # not built yet
    spawn.SOURCE.write_bytes(SOURCE.read_bytes())
    monkeypatch.setenv("CC", "false")
    spawn.spawn_library.cache_clear()
    try:
        assert spawn.spawn_library() is None and "could not build spawn.c" in caplog.text
        with BwrapSandbox() as box:
            code = "import os, sys; print(open('d/f').read(), sys.stdin.read(), os.stat('d').st_uid, os.getuid())"
            assert py(box, code, files={"d/f": "x"}, stdin=b"y").stdout == "x y 65534 65534\n"
            [agent] = psutil.Process(box.pool.idle[-1].proc.pid).children()
            assert "/spawn.so" not in {m.path for m in agent.memory_maps()}
    finally:
        spawn.spawn_library.cache_clear()


def test_the_common_devices_work(sandbox):
    code = "open('/dev/null', 'w').write('x')\n" \
        "print(len(open('/dev/urandom', 'rb').read(4)), open('/dev/zero', 'rb').read(2))"
    assert py(sandbox, code).stdout == "4 b'\\x00\\x00'\n"


def test_a_program_holds_only_its_standard_streams(sandbox):
    code = "import os; print(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))"  # 3: listdir's own
    assert py(sandbox, code, files={"a.txt": "x"}, stdin=b"x").stdout == "[0, 1, 2, 3]\n"


def test_cpu_time_counts_the_program_and_wall_time_the_run(sandbox):
    result = py(sandbox, "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass")
    assert result.ok and 0.3 <= result.cpu_s < 2 and result.wall_s >= result.cpu_s * 0.9


def test_an_unknown_backend_raises_naming_the_known_ones():
    with pytest.raises(SandboxError, match="unknown sandbox 'nonsense': choose one of auto, bwrap, docker"):
        get_sandbox("nonsense")


def test_no_usable_backend_is_one_error_saying_what_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no bwrap
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")  # no daemon
    with pytest.raises(SandboxError) as raised:
        get_sandbox("auto")
    message = str(raised.value)
    assert message.startswith("no sandbox backend is usable here. Install bubblewrap")
    assert "- bwrap: bubblewrap (bwrap) is not on PATH" in message and "- docker: cannot reach the Docker daemon" in message
    assert "make sandbox-image" in message


def test_missing_bwrap_raises_with_what_to_do():
    with pytest.raises(SandboxError, match="apt-get install bubblewrap"):
        BwrapSandbox(bwrap="/nonexistent/bwrap")


def test_no_docker_daemon_or_image_raises_with_what_to_do(monkeypatch, sandbox):
    if not isinstance(sandbox, DockerSandbox):
        pytest.skip("Docker only")
    with pytest.raises(SandboxError, match="make sandbox-image"):
        DockerSandbox(image="selfplay-sandbox:no-such-tag")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(SandboxError, match="start the Docker daemon"):
        DockerSandbox()


def test_a_bwrap_that_cannot_start_raises_instead_of_returning_a_result():
    with pytest.raises(SandboxError, match="could not start"):
        BwrapSandbox(bwrap="/bin/false")  # exits 1 like a failing bwrap, before any program could run


def test_file_names_must_stay_in_the_scratch_dir(sandbox):
    for name in ["/etc/passwd", "../escape", "a/../../b"]:
        with pytest.raises(ValueError):
            sandbox.run(["true"], files={name: "x"})


def test_auto_picks_bwrap_when_it_works_else_docker(sandbox, monkeypatch):
    if isinstance(sandbox, BwrapSandbox):
        with get_sandbox("auto") as auto:
            assert isinstance(auto, BwrapSandbox)
    else:
        monkeypatch.setenv("PATH", "/nonexistent")  # no bwrap
        with get_sandbox("auto") as auto:
            assert isinstance(auto, DockerSandbox) and auto.run(["true"]).ok


def test_a_reused_sandbox_is_reset_so_a_run_cannot_see_or_affect_the_next(sandbox, caplog):
    if not isinstance(sandbox, DockerSandbox) and not sandbox.reuse:
        pytest.skip("a fresh bwrap per run: nothing is reused")
    caplog.set_level(logging.INFO)
    same_sandbox = "os.readlink('/proc/self/ns/net')"  # its network namespace
    dirty = f"""
        import ctypes, os, resource, subprocess
        print({same_sandbox})
        os.makedirs("d/e"); open("d/e/f", "w").write("x"); os.chmod("d", 0); open("/tmp/.hidden", "w").write("x")
        resource.setrlimit(resource.RLIMIT_NOFILE, (8, 8))
        try:
            resource.prlimit(1, resource.RLIMIT_NOFILE, (8, 8))
            print("changed the agent's rlimit")
        except OSError:
            pass
        libc = ctypes.CDLL(None, use_errno=True)
        print(libc.shmget(0, 4096, 0o1777), libc.msgget(0, 0o1777), libc.semget(0, 1, 0o1777))  # IPC_PRIVATE
        subprocess.Popen(["sleep", "100"], start_new_session=True)
        subprocess.Popen(["sh", "-c", "while true; do echo x >> /tmp/ghost; sleep 0.01; done"])
    """
    first = py(sandbox, dirty)
    assert first.ok and first.stdout.splitlines()[1:] == ["-1 -1 -1"], first
    clean = f"""
        import os, resource
        print({same_sandbox})
        print(sorted(os.listdir("/tmp")), sorted(p for p in os.listdir("/proc") if p.isdigit() and p != str(os.getpid())))
        print(resource.getrlimit(resource.RLIMIT_NOFILE))
        print(*(line for line in open("/proc/self/status") if line.startswith(("Cap", "NoNewPrivs"))), sep="", end="")
    """
    second = py(sandbox, clean, limits=Limits(open_files=64))
    lines = second.stdout.splitlines()
    assert lines[0] == first.stdout.splitlines()[0], caplog.text  # the same sandbox: its reset was clean
    assert lines[1:3] == ["[] ['1']", "(64, 64)"], second  # no file, no process but the agent, its own rlimits
    assert lines[3:] == [f"{cap}:\t0000000000000000" for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")] + [
        "NoNewPrivs:\t1"]


def test_a_sandbox_whose_reset_is_not_clean_is_replaced(sandbox, caplog):
    if not isinstance(sandbox, DockerSandbox) and not sandbox.reuse:
        pytest.skip("a fresh bwrap per run: nothing is reused")
    caplog.set_level(logging.INFO)
    net = "import os; print(os.readlink('/proc/self/ns/net'))"  # which sandbox ran it
    first, again = py(sandbox, net), py(sandbox, net)
    assert first.ok and again.stdout == first.stdout  # a clean reset: the same sandbox serves the next run
    too_deep = py(sandbox, net + "\nfor _ in range(1100):\n    os.mkdir('d'); os.chdir('d')")  # see LEFT_IN_THE_KERNEL
    assert too_deep.ok and too_deep.stdout == first.stdout
    after = py(sandbox, net + "; print(os.listdir('/tmp'))")
    assert after.ok and after.stdout.splitlines()[1] == "[]"
    assert after.stdout.splitlines()[0] != first.stdout.strip()  # a new sandbox
    assert "sandbox replaced, its reset after a run left: " in caplog.text  # RecursionError, OSError (too long)


def test_reused_bwrap_needs_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SandboxError, match="reused bwrap sandboxes need root"):
        BwrapSandbox(reuse=True)


def test_an_idle_agent_that_died_is_replaced_but_one_killed_in_a_run_raises(sandbox):
    if not isinstance(sandbox, BwrapSandbox) or not sandbox.reuse:
        pytest.skip("reused bwrap sandboxes only")
    assert py(sandbox, "pass").ok
    [idle] = sandbox.pool.idle
    psutil.Process(idle.proc.pid).children()[0].kill()  # the agent, between runs
    assert py(sandbox, "print('fine')").stdout == "fine\n" and idle.proc.returncode is not None

    def kill_the_agent():
        time.sleep(0.5)
        [bwrap] = [p for p in psutil.Process().children() if p.name() == "bwrap"]
        bwrap.children()[0].kill()

    killer = threading.Thread(target=kill_the_agent)
    killer.start()
    with pytest.raises(SandboxError, match="the bwrap sandbox's agent died during the run"):
        py(sandbox, "print('started', flush=True); import time; time.sleep(5)")
    killer.join()


# --- 1. fork bomb --------------------------------------------------------------------------------------------------


def test_1_processes_are_capped_per_run(sandbox):
    code = """
        import os, signal
        n = 0
        try:
            while True:
                if os.fork() == 0:
                    signal.pause()
                n += 1
        except BlockingIOError:
            print(n)
    """
    result = py(sandbox, code, limits=Limits(wall_s=10, processes=20))
    assert result.ok and 5 <= int(result.stdout) < 20  # sh and python count too


@pytest.mark.parametrize("code", [
    "import os\nwhile True: os.fork()",
    "import os; os.system(\"bash -c ':(){ :|:& };:'\"); os.system('f(){ f|f& };f'); import time; time.sleep(9)",
])
def test_1_fork_bomb_fails_and_leaves_nothing(sandbox, code):
    token = uuid.uuid4().hex
    start = time.monotonic()
    result = py(sandbox, code, token, limits=SHORT)
    assert not result.ok and time.monotonic() - start < SHORT.wall_s + 5
    assert alive(token) == [] and alive(":|:&") == []


# --- 2. infinite loops ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [
    "while True: pass",
    "import signal\nfor s in (signal.SIGALRM, signal.SIGXCPU): signal.signal(s, signal.SIG_IGN)\nwhile True: pass",
])
def test_2_cpu_loop_stops_at_the_cpu_limit(sandbox, code):
    result = py(sandbox, code, limits=Limits(wall_s=10, cpu_s=1))
    # stopped long before the wall deadline (10 s). The kernel checks RLIMIT_CPU against its scheduler clock, which
    # runs ahead of the rusage reported, more so under load (0.74-0.85 s at a 1 s limit on the reference VM, bare too)
    assert (result.stopped, result.ok) == ("timeout", False) and result.cpu_s >= 0.5 and result.wall_s < 6


def test_2_sleeping_forever_stops_at_the_wall_deadline(sandbox):
    result = py(sandbox, "import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ntime.sleep(100)",
                limits=Limits(wall_s=1))
    assert (result.stopped, result.signal, result.ok) == ("timeout", signal.SIGKILL, False)
    assert 1 <= result.wall_s < 3


# --- 3. memory bomb ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["bytearray(10**11)", "'a' * 10**10", "x = []\nwhile True: x.append(b'x' * 10**7)"])
def test_3_memory_bomb_stops_with_memory(sandbox, code):
    result = py(sandbox, code, limits=Limits(wall_s=10, memory_bytes=256 * 2**20))
    assert (result.stopped, result.ok) == ("memory", False)


# --- 4. output flood, stdin never read ------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_4_output_flood_is_cut_at_the_cap(sandbox, stream):
    limits = Limits(wall_s=10, output_bytes=1000)
    result = py(sandbox, f"import sys\nwhile True: sys.{stream}.write('x' * 4096)", limits=limits)
    assert (result.stopped, result.ok) == ("output", False)
    assert getattr(result, stream) == "x" * 1000 and result.wall_s < 5


def test_4_a_program_that_never_reads_stdin_is_not_blocked(sandbox):
    assert py(sandbox, "print('done')", stdin=b"y" * 10**7, limits=SHORT).stdout == "done\n"


# --- 5. writes outside the scratch dir ------------------------------------------------------------------------------

WRITE_EVERYWHERE = """
    import os, sys
    for path in sys.argv[1:]:
        try:
            with open(path, "w") as f:
                f.write("pwned")
            print("wrote", path)
        except OSError:
            pass
"""


def test_5_only_the_scratch_dir_is_writable(sandbox, tmp_path):
    sentinel = tmp_path / "harness.txt"
    sentinel.write_text("intact")
    token = uuid.uuid4().hex
    outside = [f"/etc/{token}", f"/{token}", f"/usr/{token}", f"/dev/shm/{token}", f"/dev/{token}", f"/var/{token}",
               f"/root/{token}", str(tmp_path / token), f"{tempfile.gettempdir()}/{token}", f"/tmp/{token}"]
    result = py(sandbox, WRITE_EVERYWHERE, str(sentinel), *outside, f"{token}.txt")
    # inside, /tmp is the scratch dir: the only writes that succeed are there
    assert result.ok and result.stdout == f"wrote /tmp/{token}\nwrote {token}.txt\n"
    assert sentinel.read_text() == "intact" and not any(os.path.exists(p) for p in outside)


def test_5_no_user_namespace_to_remount_anything_in(sandbox):
    code = """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        print(libc.unshare(0x10000000), libc.unshare(0x00020000))  # CLONE_NEWUSER, CLONE_NEWNS
    """
    assert py(sandbox, code).stdout == "-1 -1\n"


def test_5_filling_the_scratch_dir_stops_at_its_size(sandbox):
    code = """
        total = 0
        try:
            for i in range(1000):
                with open(f"f{i}", "wb") as f:
                    for _ in range(4):
                        total += f.write(b"x" * 2**20)
        except OSError as error:
            print(total, error.errno)
    """
    result = py(sandbox, code, limits=Limits(wall_s=20, scratch_bytes=32 * 2**20))
    total, errno = map(int, result.stdout.split())
    assert errno == 28 and 28 * 2**20 <= total <= 32 * 2**20  # ENOSPC


def test_5_a_file_cannot_grow_past_file_bytes(sandbox):
    code = "import os\ntry:\n    open('big', 'wb').write(b'x' * 2**22)\nexcept OSError as e:\n    print(e.errno)"
    result = py(sandbox, code, limits=Limits(file_bytes=2**20))
    assert result.stdout == "27\n"  # EFBIG


def test_5_nothing_persists_between_runs(sandbox):
    first = py(sandbox, "open('left.txt', 'w').write('x'); open('/tmp/left2.txt', 'w').write('x')")
    second = py(sandbox, "import os; print(sorted(os.listdir('.')), sorted(os.listdir('/tmp')))")
    assert first.ok and second.stdout == "[] []\n"


KEYRING = """
    import ctypes, platform, sys
    add_key, request_key, keyctl = {"x86_64": (248, 249, 250), "aarch64": (217, 218, 219)}[platform.machine()]
    libc = ctypes.CDLL(None, use_errno=True)
    if sys.argv[1] == "leave":
        print(libc.syscall(add_key, b"user", b"left", b"for the next run", 16, -4))  # KEY_SPEC_USER_KEYRING
    else:
        key, value = libc.syscall(request_key, b"user", b"left", None, -4), ctypes.create_string_buffer(64)
        print(key, key > 0 and value.raw[:libc.syscall(keyctl, 11, key, value, 64)])  # KEYCTL_READ
"""


def test_5_nothing_persists_in_the_kernel_keyrings(sandbox):
    # a uid's user keyring lives as long as its user namespace: a reused sandbox's programs may not touch it
    left = py(sandbox, KEYRING, "leave")
    assert py(sandbox, KEYRING, "find").stdout == "-1 False\n"
    if isinstance(sandbox, DockerSandbox) or sandbox.reuse:
        assert left.stdout == "-1\n"


# What a run may leave in the kernel for the next one, and the harmless program that would notice (a reused sandbox
# must undo it; a fresh one never shares it). Found by red-teaming the reused bwrap sandbox.
LEFT_IN_THE_KERNEL = {
    "stdout and stderr made non-blocking and small": (  # the agent's own pipes
        "import fcntl, os\nfor fd in (1, 2):\n"
        "    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)\n"
        "    fcntl.fcntl(fd, 1031, 4096)",  # F_SETPIPE_SZ
        "print('x' * 300000, end='')", "x" * 300000),
    "a tree too deep for a recursive wipe": (
        "import os\nfor _ in range(1100):\n    os.mkdir('d'); os.chdir('d')",
        "import os; print(os.listdir('.'))", "[]\n"),
    "a TCP connection in TIME_WAIT, holding its port": (
        "import socket\ns = socket.socket(); s.bind(('127.0.0.1', 8000)); s.listen()\n"
        "c = socket.create_connection(('127.0.0.1', 8000)); a, _ = s.accept(); a.close(); c.recv(1); c.close()",
        "import socket; socket.socket().bind(('127.0.0.1', 8000)); print('bound')", "bound\n"),
    "sockets alive only as fds in flight": (  # a cycle the kernel frees when its unix GC runs
        "import socket\na, b = socket.socketpair(); u = socket.socket(socket.AF_UNIX); u.bind('\\0left'); u.listen()\n"
        "t = socket.socket(); t.bind(('127.0.0.1', 9000)); t.listen()\n"
        "for end in (a, b): socket.send_fds(end, [b'x'], [a.fileno(), b.fileno(), u.fileno(), t.fileno()])",
        "import socket; socket.socket().bind(('127.0.0.1', 9000)); u = socket.socket(socket.AF_UNIX)\n"
        "print(u.connect_ex('\\0left') != 0)", "True\n"),
    "flock and OFD locks on stdout and stderr": (  # they belong to the open pipe the agent shares
        "import fcntl, struct\nfcntl.flock(1, fcntl.LOCK_EX)\n"
        "fcntl.fcntl(2, 37, struct.pack('hhqqi4x', fcntl.F_WRLCK, 0, 1000, 1, 0))",  # F_OFD_SETLK
        "print([line for fd in (1, 2) for line in open(f'/proc/self/fdinfo/{fd}') if line.startswith('lock')])",
        "[]\n"),
    "an IPv6 flow label lingering after its socket": (
        "import socket, struct\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
        "request = socket.inet_pton(socket.AF_INET6, '::1') + struct.pack('!I', 0x12345)\n"
        "request += struct.pack('=BBHHHI', 0, 1, 3, 0, 60, 0)\n"  # get, exclusive, create, linger 60 s
        "try:\n    s.setsockopt(socket.IPPROTO_IPV6, 32, request)\nexcept OSError:\n    pass",  # IPV6_FLOWLABEL_MGR
        "print(open('/proc/net/ip6_flowlabel').read().count('\\n'))", "1\n"),  # its header only
    "inode flags on the scratch dir": (  # new files inherit them
        "import fcntl, os\nfd = os.open('/tmp', os.O_RDONLY)\n"
        "fcntl.ioctl(fd, 0x40086602, (0xC0).to_bytes(8, 'little'))",  # FS_IOC_SETFLAGS NOATIME | NODUMP
        "import fcntl, os\nfd = os.open('/tmp', os.O_RDONLY)\n"
        "print(int.from_bytes(fcntl.ioctl(fd, 0x80086601, bytes(8))[:4], 'little'))", "0\n"),
}


@pytest.mark.parametrize("left", LEFT_IN_THE_KERNEL)
def test_5_a_run_leaves_nothing_in_the_kernel_for_the_next(sandbox, left):
    attack, probe, expected = LEFT_IN_THE_KERNEL[left]
    assert py(sandbox, attack).exit_code is not None
    assert py(sandbox, probe, limits=Limits(output_bytes=2**20)).stdout == expected


def test_5_only_unix_ip_and_netlink_sockets(sandbox):
    code = """
        import socket
        for family in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK):
            socket.socket(family, socket.SOCK_DGRAM).close()
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP).close()
        refused = [
            lambda: socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM),  # vsock and AF_ALG are in no namespace
            lambda: socket.socketpair(socket.AF_VSOCK, socket.SOCK_STREAM),
            lambda: socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET),
            lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM),
            lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15),  # uevents: the host's devices
            lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132),  # SCTP: a module to load
        ]
        for make in refused:
            try:
                make()
                print("made")
            except PermissionError:
                print("refused")
    """
    assert py(sandbox, code).stdout == "refused\n" * 6


def test_5_cpu_time_of_children_the_kernel_reaped(sandbox):
    code = """
        import os, select, signal, time
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel, not waited for
        pid = os.fork()
        if pid == 0:
            t = time.process_time()
            while time.process_time() - t < 0.5: pass
            os._exit(0)
        select.select([os.pidfd_open(pid)], [], [])
    """
    result = py(sandbox, code)
    assert result.ok
    if isinstance(sandbox, DockerSandbox):
        assert result.cpu_s >= 0.5
    else:  # documented: bubblewrap counts only the processes that were waited for
        assert result.cpu_s < 0.5


def test_5_docker_scratch_holds_one_file_per_kib(sandbox):
    if not isinstance(sandbox, DockerSandbox):
        pytest.skip("bwrap's tmpfs caps bytes only (documented)")
    code = """
        import os
        n = 0
        try:
            while True:
                os.close(os.open(str(n), os.O_CREAT | os.O_WRONLY)); n += 1
        except OSError as error:
            print(1000 <= n <= 1024, error.errno)
    """
    assert py(sandbox, code, limits=Limits(scratch_bytes=2**20)).stdout == "True 28\n"  # ENOSPC


def test_5_no_io_uring_which_would_make_sockets_past_the_filter(sandbox):
    code = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n" \
        "print(libc.syscall(425, 8, ctypes.create_string_buffer(120)), ctypes.get_errno())"  # io_uring_setup
    assert py(sandbox, code).stdout == "-1 1\n"  # EPERM


def test_5_a_reused_sandbox_keeps_no_ipc_or_tcp_state(sandbox):
    if not isinstance(sandbox, DockerSandbox) and not sandbox.reuse:
        pytest.skip("a fresh bwrap per run: its namespaces are new each run")
    code = "import sys\nfor key in sys.argv[1:]: print(open('/proc/sys/' + key.replace('.', '/')).read().split())"
    result = py(sandbox, code, *SANDBOX_SYSCTLS)
    assert result.stdout.splitlines() == [str(value.split()) for value in SANDBOX_SYSCTLS.values()]


def test_5_stdin_larger_than_a_file_may_be(sandbox):
    stdin = b"x" * (Limits().file_bytes + 1)
    assert py(sandbox, "import sys; print(len(sys.stdin.buffer.read()))", stdin=stdin).stdout == f"{len(stdin)}\n"


# --- 6. secrets ------------------------------------------------------------------------------------------------------


def test_6_no_secrets_readable(sandbox, monkeypatch):
    secret = uuid.uuid4().hex
    monkeypatch.setenv("SELFPLAY_TEST_SECRET", secret)
    code = """
        import glob, os
        paths = ["/etc/shadow", "/etc/passwd", "/root/.ssh", os.path.expanduser("~/.ssh")]
        print([path for path in paths if os.path.exists(path)])
        print(dict(os.environ))
        for path in glob.glob("/proc/*/environ") + glob.glob("/proc/*/cmdline"):
            try:
                print(open(path, "rb").read())
            except OSError:
                pass
    """
    result = py(sandbox, code)
    image_files = "['/etc/passwd']" if isinstance(sandbox, DockerSandbox) else "[]"  # the image's, not the host's
    assert result.ok and result.stdout.startswith(f"{image_files}\n") and secret not in result.stdout


def test_6_the_environment_is_exactly_the_documented_one(sandbox):
    result = py(sandbox, "import os; print(sorted(os.environ), os.getuid(), os.getgid(), os.getgroups())")
    assert result.stdout == "['HOME', 'LANG', 'PATH', 'PWD', 'PYTHONDONTWRITEBYTECODE'] 65534 65534 []\n"


# --- 7. network -----------------------------------------------------------------------------------------------------


def test_7_no_network_not_even_the_hosts_localhost(sandbox):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        code = """
            import socket, sys
            for target in [("127.0.0.1", int(sys.argv[1])), ("1.1.1.1", 53), ("8.8.8.8", 443)]:
                try:
                    socket.create_connection(target, timeout=2)
                    print("connected", target)
                except OSError:
                    pass
            try:
                socket.getaddrinfo("example.com", 80)
                print("resolved")
            except OSError:
                pass
            print(sorted(name for _, name in socket.if_nameindex()))
        """
        result = py(sandbox, code, str(listener.getsockname()[1]), limits=Limits(wall_s=20))
        with pytest.raises(TimeoutError):
            listener.accept()
    assert (result.ok, result.stdout) == (True, "['lo']\n")


# --- 8. kills its parent / process group ----------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["os.kill(os.getppid(), 9)", "os.killpg(0, 9)", "os.kill(-1, 9)"])
def test_8_killing_parent_or_group_hurts_only_the_program(sandbox, code):
    with ThreadPoolExecutor(1) as pool:
        sibling = pool.submit(py, sandbox, "import time; time.sleep(1); print('sibling fine')", limits=SHORT)
        time.sleep(0.3)
        py(sandbox, f"import os; {code}; import time; time.sleep(0.5)")
        assert sibling.result().stdout == "sibling fine\n"


# --- 9. exits 0 before the tests run (verdict: the code reward's; the sandbox reports faithfully) -------------------


@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "os._exit(0)", "raise SystemExit"])
def test_9_an_early_exit_is_reported_as_it_happened(sandbox, exit_call):
    result = py(sandbox, f"import os, sys\nprint('before', flush=True)\n{exit_call}\nprint('RESULT: PASS')")
    assert (result.exit_code, result.stopped, result.stdout) == (0, "exit", "before\n")


# --- 10. defeats asserts (verdict: the code reward's; the sandbox keeps the harness's files out of reach) ------------


def test_10_a_program_cannot_change_the_harness_files_it_is_given(sandbox):
    files = {"check.py": "def check(x): assert x\n"}
    before = open(__file__, "rb").read()
    code = "open('check.py', 'w').write('def check(x): pass'); import sys; open(sys.argv[1], 'w').write('pwned')"
    assert py(sandbox, code, __file__, files=files).exit_code == 1  # the host path does not exist inside
    again = sandbox.run(["python3", "-c", "print(open('check.py').read(), end='')"], files=files)
    assert again.stdout == "def check(x): assert x\n" and open(__file__, "rb").read() == before


# --- 11. reads the test file (verdict: the code reward's; the sandbox shows only the files it is given) -------------


def test_11_only_the_given_files_are_visible(sandbox):
    code = "import os, sys; print(sorted(os.listdir('.')), os.path.exists(sys.argv[1]), os.path.exists('/work'))"
    result = sandbox.run(["python3", "-c", code, __file__], files={"solution.py": "x = 1"})
    assert result.stdout == "['solution.py'] False False\n"


# --- 12. threads and double-forked children that outlive the program -----------------------------------------------


def test_12_a_non_daemon_thread_is_killed_at_the_deadline(sandbox):
    result = py(sandbox, "import threading, time; threading.Thread(target=time.sleep, args=(100,)).start()",
                limits=Limits(wall_s=1))
    assert (result.stopped, result.ok) == ("timeout", False)


@pytest.mark.parametrize("parent_waits", [False, True])
def test_12_a_double_forked_setsid_child_dies_with_the_run(sandbox, parent_waits):
    token = uuid.uuid4().hex
    code = f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(100)
            os._exit(0)
        time.sleep({100 if parent_waits else 0})
    """
    result = py(sandbox, code, token, limits=Limits(wall_s=1.5))
    assert result.stopped == ("timeout" if parent_waits else "exit")
    assert alive(token) == []


def test_12_every_process_is_gone_when_run_returns(sandbox):
    code = "import os, time\nfor _ in range(40):\n    if os.fork() == 0: time.sleep(100)\ntime.sleep(100)"
    for _ in range(3):  # the kernel tears a pid namespace down asynchronously: run must wait for it
        token = uuid.uuid4().hex
        assert py(sandbox, code, token, limits=Limits(wall_s=0.5)).stopped == "timeout"
        assert alive(token) == []


# --- 13. segfault, deep recursion ------------------------------------------------------------------------------------


def test_13_segfault_is_a_signal(sandbox):
    result = py(sandbox, "import ctypes; ctypes.string_at(0)")
    assert (result.stopped, result.signal, result.exit_code) == ("signal", signal.SIGSEGV, None)


def test_13_deep_recursion_fails(sandbox):
    result = py(sandbox, "import sys\nsys.setrecursionlimit(10**7)\ndef f(n): return f(n + 1)\nf(0)", limits=SHORT)
    assert not result.ok


# --- 14. forges result lines (verdict: the code reward's; the sandbox's own channel cannot be forged) ----------------


def test_14_a_forged_sandbox_failure_is_just_a_failing_program(sandbox):
    code = f"import sys; sys.stderr.write({READY.decode()!r} + 'bwrap: Can\\'t mount proc\\n'); sys.exit(1)"
    result = py(sandbox, code)
    assert (result.exit_code, result.stderr) == (1, READY.decode() + "bwrap: Can't mount proc\n")


def test_14_output_comes_back_verbatim_and_unmixed(sandbox):
    result = py(sandbox, "import sys; sys.stdout.buffer.write(b'ok\\xff'); sys.stderr.write('ALL TESTS PASSED')")
    assert (result.stdout, result.stderr) == ("ok\ufffd", "ALL TESTS PASSED")


# --- 15. raises its own rlimits -------------------------------------------------------------------------------------


def test_15_rlimits_cannot_be_raised(sandbox):
    # Docker caps processes with the container's pids cgroup: RLIMIT_NPROC would count every uid-65534 process on
    # the host (no user namespace), so it is not set there.
    names = ["RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE"]
    if isinstance(sandbox, BwrapSandbox):
        names.append("RLIMIT_NPROC")
    code = """
        import resource, sys
        for name in sys.argv[1:]:
            limit = getattr(resource, name)
            try:
                resource.setrlimit(limit, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
                print("raised", name)
            except (ValueError, OSError):
                pass
        bytearray(10**10)
    """
    result = py(sandbox, code, *names)
    assert (result.stdout, result.stopped) == ("", "memory")


# --- 16. many submissions at once ----------------------------------------------------------------------------------


def test_16_a_hundred_concurrent_runs_do_not_mix(sandbox):
    code = "import sys; open('id.txt', 'w').write(sys.argv[1]); print(open('id.txt').read())"
    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(lambda i: py(sandbox, code, str(i), limits=Limits(wall_s=60)), range(100)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(100)]


# --- soak ------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_soak_1000_runs_leave_nothing_behind(sandbox):
    me = psutil.Process()

    def counts() -> tuple:
        settle(sandbox)
        containers = len(our_containers(sandbox)) if isinstance(sandbox, DockerSandbox) else 0
        return me.num_fds(), threading.active_count(), set(me.children(recursive=True)), containers

    before = counts()
    results = [sandbox.run(["python3", "-c", "pass"]) for _ in range(1000)]
    assert all(r.ok for r in results)
    assert counts() == before
