"""tcmalloc under the commands that train or generate (selfplay.allocator)."""

import ctypes.util
import os
import subprocess
import sys

import pytest

from selfplay import allocator

needs_tcmalloc = pytest.mark.skipif(ctypes.util.find_library("tcmalloc_minimal") is None,
                                    reason="libtcmalloc-minimal4 is not installed (`make setup` installs it)")


def run(code: str, **env) -> list[str]:
    clean = {key: value for key, value in os.environ.items() if key not in ("LD_PRELOAD", allocator.CHOICE)}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                         timeout=60, check=True)
    return out.stdout.split()


@needs_tcmalloc
def test_the_environment_preloads_tcmalloc_unless_told_otherwise():
    assert "tcmalloc_minimal" in allocator.environment({})["LD_PRELOAD"]
    assert allocator.environment({"LD_PRELOAD": "libmine.so"})["LD_PRELOAD"] == "libmine.so"  # the user's is kept
    assert "LD_PRELOAD" not in allocator.environment({allocator.CHOICE: "glibc"})


def test_an_unknown_choice_is_one_clear_error_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="SELFPLAY_MALLOC='jemalloc': use tcmalloc .* or glibc"):
        allocator.environment({allocator.CHOICE: "jemalloc"})
    selfplay = os.path.join(os.path.dirname(sys.executable), "selfplay")
    out = subprocess.run([selfplay, "loop", "--steps", "1", "--run", "never-made"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env={**os.environ, allocator.CHOICE: "jemalloc"})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["selfplay: error: SELFPLAY_MALLOC='jemalloc': use tcmalloc (the "
                                               "default) or glibc"]
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written


def test_without_the_library_nothing_changes(monkeypatch):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert allocator.environment({"PATH": "/bin"}) == {"PATH": "/bin"}


@needs_tcmalloc
def test_a_process_runs_itself_again_under_tcmalloc_with_the_same_pid():
    code = ("import os; from selfplay import allocator; print(os.getpid(), allocator.in_use(), flush=True); "
            "allocator.reexec_with_tcmalloc(); print(os.getpid(), allocator.in_use())")
    first_pid, before, second_pid, after, third_pid, again = run(code)
    assert (before, after) == ("False", "True")
    assert first_pid == second_pid  # the same process, arguments and terminal: replaced, not a child
    # once preloaded it does not run itself again: two lines, not three
    assert (third_pid, again) == (first_pid, "True")


@needs_tcmalloc
def test_glibc_when_asked():
    code = "from selfplay import allocator; allocator.reexec_with_tcmalloc(); print(allocator.in_use())"
    assert run(code, **{allocator.CHOICE: "glibc"}) == ["False"]


@needs_tcmalloc
@pytest.mark.parametrize("preload", [True, False])
def test_release_gives_freed_memory_back_to_the_kernel(preload):
    """tcmalloc keeps what a trainer freed until asked; glibc gives large blocks back at once. Either way nothing
    freed stays resident after `release_free_memory` (the loop calls it between its trainers)."""
    code = """
import os
from selfplay import allocator
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20
start = rss_mb()
blocks = [bytearray(b"x" * (32 << 20)) for _ in range(10)]
held = rss_mb()
del blocks
freed = rss_mb()
allocator.release_free_memory()
print(allocator.in_use(), start, held, freed, rss_mb())
"""
    in_use, start, held, freed, released = run(code, **({"LD_PRELOAD": allocator.environment({})["LD_PRELOAD"]}
                                                        if preload else {}))
    assert in_use == str(preload)
    assert int(held) - int(start) > 300
    if preload:
        assert int(freed) > int(held) - 50  # tcmalloc kept the pages: the step after reuses them without faults
    assert int(released) < int(start) + 50
