"""`sandboxes/spawn.c` built for this machine, for the agents of reused bubblewrap sandboxes (they start each program
with it rather than a fork: ~0.9 ms less CPU a run). Compiled with the system's C compiler (`$CC`, else `cc`) on
first use, beside its source (which bwrap, run as the agent's uid, can read, as it reads agent.py), named by the
source's hash and the machine; loaded once here to check it. Where any of that fails, `spawn_library()` is None, says
why in the log, and the agents fork.
"""

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("spawn.c")
FALLBACK = "so reused bwrap sandboxes fork each program (~0.9 ms more CPU a run)"


@functools.cache
def spawn_library() -> Path | None:
    """The built library (made once per source version and machine), or None."""
    try:
        built = SOURCE.with_name(f"spawn-{hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]}-"
                                 f"{platform.machine()}.so")
        if not built.is_file() and not build(built):
            return None
        ctypes.CDLL(str(built)).selfplay_spawn  # noqa: B018 (loads: a noexec mount or another libc fails here)
    except (OSError, AttributeError, subprocess.SubprocessError) as error:
        log.info("%s is not usable, %s: %s", SOURCE.name, FALLBACK, error)
        return None
    return built


def build(built: Path) -> bool:
    """Compile SOURCE into `built` (atomically: a concurrent build finds a whole library or none); whether it did."""
    compiler = shlex.split(os.environ.get("CC") or "cc")
    if not compiler or shutil.which(compiler[0]) is None:
        log.info("no C compiler (%s), %s", os.environ.get("CC") or "cc", FALLBACK)
        return False
    fd, made = tempfile.mkstemp(suffix=".tmp", dir=SOURCE.parent)  # OSError where the source is read-only
    os.close(fd)
    try:
        result = subprocess.run([*compiler, "-O2", "-shared", "-fPIC", "-o", made, str(SOURCE)], capture_output=True,
                                text=True, timeout=120)
        if result.returncode != 0:
            log.info("%s could not build %s, %s: %s", compiler[0], SOURCE.name, FALLBACK, result.stderr[-300:])
            return False
        os.chmod(made, 0o755)
        os.replace(made, built)
        return True
    finally:
        if os.path.exists(made):
            os.unlink(made)
