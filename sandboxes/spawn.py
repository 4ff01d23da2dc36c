"""`sandboxes/spawn.c` built for this machine, for the agents of reused bubblewrap sandboxes (they start each program
with it rather than a fork: ~0.9 ms less CPU a run). Compiled with the system's C compiler (`$CC`, else `cc`) on
first use, beside its source (which bwrap, run as the agent's uid, can read, as it reads agent.py), named by the
source's hash; where that fails, `spawn_library()` is None, says why in the log, and the agents fork.
"""

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("spawn.c")


@functools.cache
def spawn_library() -> Path | None:
    """The built library (made once per source version), or None."""
    source = SOURCE.read_bytes()
    built = SOURCE.with_name(f"spawn-{hashlib.sha256(source).hexdigest()[:16]}.so")
    if built.is_file():
        return built
    compiler = shutil.which(os.environ.get("CC") or "cc")
    if compiler is None:
        log.info("no C compiler (cc): reused bwrap sandboxes fork each program, ~0.9 ms more CPU a run")
        return None
    try:
        fd, made = tempfile.mkstemp(suffix=".tmp", dir=SOURCE.parent)
    except OSError as error:  # e.g. installed read-only
        log.info("cannot build %s beside its source, so reused bwrap sandboxes fork each program: %s", built.name,
                 error)
        return None
    os.close(fd)
    result = subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", made, str(SOURCE)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        os.unlink(made)
        log.info("%s could not build %s, so reused bwrap sandboxes fork each program: %s", compiler, SOURCE.name,
                 result.stderr[-300:])
        return None
    os.chmod(made, 0o755)
    os.replace(made, built)  # atomic: a concurrent build finds a whole library or none
    return built
