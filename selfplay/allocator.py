"""The loop's processes allocate with tcmalloc, when the machine has it.

Each training step and each generation allocates and frees hundreds of MB of tensors. glibc's malloc gives large
freed blocks back to the kernel and asks for them again at the next step, so every step pays page faults for memory
it had a moment before (on the 2-core VMs here, ~11 us each: 180k faults, 2 s of system time, in the first update);
tcmalloc keeps them for reuse. vLLM's CPU backend asks for it too ("libtcmalloc is not found in LD_PRELOAD").

An allocator is chosen before a process starts, so the commands that train or generate run themselves again with
it preloaded (`reexec_with_tcmalloc`); vLLM's engine processes and the trainer's children inherit it. Skipped where
the library is missing (`make setup` installs Debian's libtcmalloc-minimal4), where LD_PRELOAD already names
something, and under SELFPLAY_MALLOC=glibc.
"""

import ctypes
import ctypes.util
import os
import sys

CHOICE = "SELFPLAY_MALLOC"  # "glibc" keeps glibc's malloc
LIBRARY = "tcmalloc_minimal"


def environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) with tcmalloc preloaded, where it applies; unchanged elsewhere. ValueError
    for a SELFPLAY_MALLOC that is neither tcmalloc nor glibc."""
    env = dict(os.environ if env is None else env)
    choice = env.get(CHOICE, "tcmalloc")
    if choice not in ("tcmalloc", "glibc"):
        raise ValueError(f"{CHOICE}={choice!r}: use tcmalloc (the default) or glibc")
    name = ctypes.util.find_library(LIBRARY)  # libtcmalloc_minimal.so.4, which the loader finds as it finds libc
    if name and not env.get("LD_PRELOAD") and choice == "tcmalloc":
        env["LD_PRELOAD"] = name
    return env


def reexec_with_tcmalloc() -> None:
    """Replace this process with itself under tcmalloc (same pid, arguments and terminal), where it applies and is
    not already done; return otherwise."""
    env = environment()
    if env.get("LD_PRELOAD") != os.environ.get("LD_PRELOAD"):
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def in_use() -> bool:
    """Whether this process allocates with tcmalloc."""
    return _tcmalloc() is not None


def release_free_memory() -> None:
    """Hand the allocator's free pages back to the kernel (after a trainer is done: they are not needed again soon)."""
    library = _tcmalloc()
    if library is not None:
        library.MallocExtension_ReleaseFreeMemory()
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _tcmalloc():
    process = ctypes.CDLL(None)
    return process if hasattr(process, "MallocExtension_ReleaseFreeMemory") else None
