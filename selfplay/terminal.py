"""What reaches the terminal: our lines only. Everything else (third-party prints, warnings and logs, vLLM's engine
processes) goes to the run's log.txt.

    with ThirdPartyOutput(verbose=False) as out:   # file descriptors 1 and 2 now write to a log file
        out.console.print("our line")                         # the terminal, through a copy of the old stdout
        out.move_into(run_dir)                                # the log becomes run_dir/log.txt, nothing lost

The redirection is at the file-descriptor level, so C extensions and child processes (vLLM's EngineCore, Stockfish's
stderr) follow it. Until the run directory exists the log is a temporary file (deleted when no run was made). With
`verbose`, a thread copies the log to the terminal as it grows.
"""

import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.text import Text

PIPE_WIDTH = 120  # rich assumes 80 columns when stdout is not a terminal: the held-out tables would wrap every row
OUR_LOGGERS = ("selfplay", "rewards", "sandboxes")


def output_console(file=None) -> Console:
    """The console our lines go to: the terminal's width, or PIPE_WIDTH through a pipe or into a file."""
    console = Console(file=file)
    if console.is_terminal:
        return console
    return Console(file=file, width=PIPE_WIDTH)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


class ThirdPartyOutput:
    def __init__(self, *, verbose: bool = False):
        self.verbose = verbose
        self.path: Path | None = None
        self.moved = False

    def __enter__(self) -> "ThirdPartyOutput":
        self.path = Path(tempfile.gettempdir()) / f"selfplay-{os.getpid()}.log"
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = os.dup(1), os.dup(2)
        self.terminal = os.fdopen(os.dup(1), "w", buffering=1)
        self.terminal_err = os.fdopen(os.dup(2), "w", buffering=1)
        log_fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        self.streams = sys.stdout, sys.stderr  # Python-level writes follow the descriptors even if these were swapped
        sys.stdout, sys.stderr = open(1, "w", buffering=1, closefd=False), open(2, "w", buffering=1, closefd=False)
        self.console = output_console(self.terminal)
        self.handler = TerminalLogHandler(self.console)
        for name in OUR_LOGGERS:
            logging.getLogger(name).addHandler(self.handler)
            logging.getLogger(name).setLevel(logging.INFO)
        self.stop, self.lock = threading.Event(), threading.Lock()
        self.copier = None
        if self.verbose:
            self.reader = open(self.path, "rb")
            self.copier = threading.Thread(target=self._copy_to_terminal, daemon=True)
            self.copier.start()
        return self

    def move_into(self, run_dir: Path) -> Path:
        """The log becomes run_dir/log.txt: renamed (the open descriptors keep writing to it), or, across file systems
        or onto the log of a resumed run, appended, with descriptors 1 and 2 switched to it (called before any child
        process starts)."""
        target = Path(run_dir) / "log.txt"
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            if target.exists():  # a resumed run: its log goes on
                raise FileExistsError(target)
            os.replace(self.path, target)
        except OSError:
            with open(self.path, "rb") as source, open(target, "ab") as sink:
                start = sink.tell()
                shutil.copyfileobj(source, sink)
            log_fd = os.open(target, os.O_WRONLY | os.O_APPEND)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.close(log_fd)
            self.path.unlink()
            if self.copier:
                with self.lock:
                    reader = open(target, "rb")
                    reader.seek(start + self.reader.tell())
                    self.reader.close()
                    self.reader = reader
        self.path, self.moved = target, True
        return target

    def _copy_to_terminal(self) -> None:
        while True:
            with self.lock:
                chunk = self.reader.read(65536)
            if chunk:
                self.terminal.buffer.write(chunk)
                self.terminal.flush()
            elif self.stop.is_set():
                self.reader.close()
                return
            else:
                time.sleep(0.2)

    def __exit__(self, exc_type, exc, tb):
        sys.stdout.flush()
        sys.stderr.flush()
        if self.copier:
            self.stop.set()
            self.copier.join(timeout=5)
        for name in OUR_LOGGERS:
            logging.getLogger(name).removeHandler(self.handler)
        sys.stdout.close()
        sys.stderr.close()
        sys.stdout, sys.stderr = self.streams
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        for fd in self.saved:
            os.close(fd)
        self.terminal.close()
        self.terminal_err.close()
        if not self.moved and exc_type is None:  # no run was made (bad input): nothing to keep
            self.path.unlink(missing_ok=True)


class TerminalLogHandler(logging.Handler):
    """Our own log records (selfplay, rewards, sandboxes; INFO and up) on the terminal too, one dim line each.
    While a live dashboard shows them in its warnings panel (`warnings_elsewhere`), WARNING ones are left to it."""

    warnings_elsewhere = 0

    def __init__(self, console: Console):
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING and TerminalLogHandler.warnings_elsewhere:
            return
        style = "yellow" if record.levelno >= logging.WARNING else "dim"
        self.console.print(Text(f"{record.levelname.lower()}: {record.getMessage()}", style=style))
