"""A pool of Stockfish processes that scores (position, move) pairs in parallel, behind an evaluation cache.

    with EnginePool(size=2, limit=chess.engine.Limit(depth=8), cache_path="~/.cache/selfplay/evals.sqlite") as pool:
        pool.score_moves([(board, move), ...])      # -> [1.0, 0.62, ...]: expected score relative to the best move
        pool.best_moves([board, ...])                # -> ["e2e4", ...]
        pool.legal_move_scores([board, ...])         # -> [{"e2e4": 1.0, "f2f3": 0.41, ...}, ...]: every legal move
    EnginePool(commands=["ssh box1 stockfish", "ssh box2 stockfish"])   # any commands that speak UCI on stdio

An evaluation is the expected score (`PovScore.wdl().expectation()`: win 1, draw 0.5, loss 0) for the side to move,
either with the engine's best move or with one given root move. Evaluations are cached by (position, move, limit):
in memory, and on disk when `cache_path` is given, so a GRPO batch that repeats the same moves, and the next run,
pay for each distinct evaluation once. A batch is deduplicated, then its misses are spread over the engines.

An engine that dies, or that does not answer within `timeout` seconds (it is then killed), is restarted and the
evaluation retried, up to `max_restarts` times in a row; then `EngineError` says what to do. `close()` (or leaving
the `with` block) ends every engine process. Without it they still end with this process, even one killed by kill -9
(each Stockfish gets the parent-death signal), and they never hold up the interpreter's exit. Each runs in a process
group of its own: the terminal's Ctrl-C is ours to handle.
"""

import ctypes
import functools
import logging
import os
import queue
import shlex
import shutil
import signal
import sqlite3
import threading
import time
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from pathlib import Path

import chess
import chess.engine

log = logging.getLogger(__name__)

Key = tuple[str, str | None]  # (FEN, UCI move or None for the engine's own best move)
PR_SET_PDEATHSIG = 1
# Stockfish's hash table in MB (its default 16). Each search starts from a cleared table; a depth-8 search stores a few
# thousand positions, which 1 MB (~100k entries) holds: the same scores as 16 MB (bench/engine_reward.py checks
# equality with the default engine) and 1.15x the searches/s.
HASH_MB = 1
PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: between fork and exec the child only calls it


class EngineError(RuntimeError):
    """Stockfish cannot be started or keeps dying; the message says what to do."""


def find_stockfish() -> str:
    """The Stockfish binary: $SELFPLAY_STOCKFISH, then PATH, then Debian's games directory."""
    for candidate in (os.environ.get("SELFPLAY_STOCKFISH"), shutil.which("stockfish"), "/usr/games/stockfish"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise EngineError("Stockfish not found: `apt-get install stockfish` (or `make setup`), or set SELFPLAY_STOCKFISH")


def parse_limit(text: str) -> chess.engine.Limit:
    """ "depth=8", "nodes=20000" or "time=0.05" -> a search limit; anything else raises ValueError."""
    name, _, value = text.partition("=")
    try:
        if name in ("depth", "nodes") and int(value) > 0:
            return chess.engine.Limit(**{name: int(value)})
        if name == "time" and float(value) > 0:
            return chess.engine.Limit(time=float(value))
    except ValueError:
        pass
    raise ValueError(f"engine limit {text!r}: expected depth=N, nodes=N or time=SECONDS (positive)")


def limit_key(limit: chess.engine.Limit) -> str:
    """A stable text for a search limit, e.g. "depth=8" (part of every cache key)."""
    fields = ("depth", "nodes", "time", "mate")
    return ",".join(f"{name}={getattr(limit, name)}" for name in fields if getattr(limit, name) is not None)


def die_with_parent(parent: int) -> None:
    """In a new Stockfish, before its exec: SIGKILL when the thread that started it ends, so with this process, even
    by kill -9 (the end of its stdin is not enough: a child we forked, as DataLoader workers are, keeps it open)."""
    PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the prctl
        os._exit(1)


class Engine:
    """One UCI engine process (a command: Stockfish's path, or e.g. `ssh host stockfish`), started on first use,
    killed when an analysis outlives `timeout` (by one watchdog thread per engine, which sleeps until the running
    search's deadline: a thread per search cost more than the search's own Python work)."""

    def __init__(self, command: list[str], timeout: float):
        self.command, self.timeout = command, timeout
        self.engine: chess.engine.SimpleEngine | None = None
        self.pid: int | None = None
        self.deadline: float | None = None  # of the search running now
        self.watching = threading.Condition()
        self.watchdog: threading.Thread | None = None
        self.analysis_mode: dict = {}

    def analyse(self, board: chess.Board, limit: chess.engine.Limit, move: chess.Move | None) -> tuple[float, str | None]:
        if self.engine is None:
            self.start()
        self.deadline = time.monotonic() + self.timeout  # a hung engine is killed: EngineTerminatedError below
        try:
            # A new game clears the hash table: the result depends on the key only, not on what was searched before.
            # `play` is one round trip to the engine's thread (`analysis` takes three) and parses only the score of
            # the info lines; in analysis mode, as `analyse` searches: the same scores and best move
            result = self.engine.play(board, limit, root_moves=[move] if move else None, game=object(),
                                      info=chess.engine.INFO_SCORE, options=self.analysis_mode)
        finally:
            self.deadline = None
        return result.info["score"].pov(board.turn).wdl().expectation(), result.move.uci() if result.move else None

    def watch(self) -> None:
        """The watchdog: kill the engine when a search passes its deadline; ends with the engine."""
        with self.watching:
            while self.engine is not None:
                deadline = self.deadline
                if deadline is not None and time.monotonic() >= deadline:
                    self.kill()
                    self.deadline = None
                self.watching.wait(max(0.0, deadline - time.monotonic()) if deadline else self.timeout)

    def start(self) -> None:
        started: Future[chess.engine.SimpleEngine] = Future()

        def popen() -> None:
            try:  # setpgrp: the terminal's Ctrl-C is ours
                started.set_result(chess.engine.SimpleEngine.popen_uci(
                    self.command, setpgrp=True, preexec_fn=functools.partial(die_with_parent, os.getpid())))
            except BaseException as error:
                started.set_exception(error)

        # python-chess runs the engine's event loop on a thread it makes (Stockfish's parent), which inherits the
        # daemon flag of the thread that starts it: a daemon, so that an engine left open never keeps the
        # interpreter from exiting (Python joins the other threads before any atexit hook could close it)
        threading.Thread(target=popen, name="stockfish-start", daemon=True).start()
        self.engine = started.result()
        self.pid = self.engine.protocol.transport.get_pid()
        if "Hash" in self.engine.options:  # a new game clears it: the smallest is the cheapest to clear
            self.engine.configure({"Hash": HASH_MB})
        self.analysis_mode = {"UCI_AnalyseMode": True} if "UCI_AnalyseMode" in self.engine.options else {}
        self.watchdog = threading.Thread(target=self.watch, name="stockfish-watchdog", daemon=True)
        self.watchdog.start()

    def kill(self) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is None:
            return
        with self.watching:
            self.watching.notify()  # the watchdog ends
        self.watchdog.join()
        try:
            engine.quit()
        except (chess.engine.EngineError, chess.engine.EngineTerminatedError, OSError, TimeoutError):
            self.kill()
            engine.close()
        self.pid = None


class DiskCache:
    """Evaluations kept across runs in one SQLite file; only the pool's calling thread touches it."""

    def __init__(self, path: str | Path):
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(path, check_same_thread=False)
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS evals (fen TEXT, move TEXT, lim TEXT, expectation REAL, best TEXT, "
                "PRIMARY KEY (fen, move, lim))"
            )
        except sqlite3.Error as error:  # not ours (a text file, another database): leave it untouched
            raise EngineError(f"engine cache {path}: {error}; give another --engine-cache file") from None

    def get(self, key: Key, lim: str) -> tuple[float, str | None] | None:
        row = self.db.execute(
            "SELECT expectation, best FROM evals WHERE fen = ? AND move = ? AND lim = ?", (key[0], key[1] or "", lim)
        ).fetchone()
        return (row[0], row[1] or None) if row else None

    def put(self, items: dict[Key, tuple[float, str | None]], lim: str) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO evals VALUES (?, ?, ?, ?, ?)",
            [(fen, move or "", lim, value, best or "") for (fen, move), (value, best) in items.items()],
        )
        self.db.commit()

    def close(self) -> None:
        self.db.close()


class EnginePool:
    def __init__(
        self,
        *,
        size: int | None = None,
        limit: chess.engine.Limit | None = None,
        commands: list[str] | None = None,
        cache_path: str | Path | None = None,
        max_restarts: int = 2,
        timeout: float = 60.0,
    ):
        # one engine per command (repeat one for more), or `size` of them taking the commands in turn
        self.commands = [shlex.split(command) for command in commands] if commands else [[find_stockfish()]]
        self.size = size or (len(self.commands) if commands else os.cpu_count() or 1)
        self.limit = limit or chess.engine.Limit(depth=8)
        self.lim = limit_key(self.limit)
        self.max_restarts = max_restarts
        self.engines = [Engine(self.commands[i % len(self.commands)], timeout) for i in range(self.size)]
        self.idle: queue.Queue[Engine] = queue.Queue()
        for engine in self.engines:
            self.idle.put(engine)
        self.workers = ThreadPoolExecutor(self.size, thread_name_prefix="stockfish")
        self.cache: dict[Key, tuple[float, str | None]] = {}
        self.disk = DiskCache(cache_path) if cache_path else None
        self.evaluations = 0  # engine searches actually run (cache misses)

    def evaluate(self, keys: list[Key], boards: dict[str, chess.Board] | None = None) -> list[tuple[float, str | None]]:
        """(expected score for the side to move, engine's best move) per key, searching only what no cache has;
        `boards` (FEN -> board) saves parsing the FENs again."""
        missing = []
        for key in dict.fromkeys(keys):
            if key in self.cache:
                continue
            stored = self.disk.get(key, self.lim) if self.disk else None
            if stored is None:
                missing.append(key)
            else:
                self.cache[key] = stored
        boards = boards or {}
        found = dict(zip(missing, self.workers.map(lambda key: self._search(key, boards.get(key[0])), missing)))
        self.evaluations += len(found)
        self.cache.update(found)
        if self.disk and found:
            self.disk.put(found, self.lim)
        return [self.cache[key] for key in keys]

    def score_moves(self, pairs: list[tuple[chess.Board, chess.Move]]) -> list[float]:
        """1 for a move as good as the engine's best, down to 0 as it gives away expected score."""
        fens = [board.fen() for board, _ in pairs]
        keys = [(fen, None) for fen in fens] + [(fen, move.uci()) for fen, (_, move) in zip(fens, pairs)]
        values = [value for value, _ in self.evaluate(keys, {fen: board for fen, (board, _) in zip(fens, pairs)})]
        best, played = values[: len(pairs)], values[len(pairs) :]
        # a root-move search can see further than the free one: never score above 1
        return [1.0 - (max(b, p) - p) for b, p in zip(best, played)]

    def best_moves(self, boards: list[chess.Board]) -> list[str | None]:
        return [best for _, best in self.evaluate([(board.fen(), None) for board in boards])]

    def legal_move_scores(self, boards: list[chess.Board]) -> list[dict[str, float]]:
        """Per position, the score of each legal move (UCI -> [0, 1], as `score_moves`), all searched in one batch."""
        moves = [list(board.legal_moves) for board in boards]
        scores = iter(self.score_moves([(board, move) for board, legal in zip(boards, moves) for move in legal]))
        return [{move.uci(): next(scores) for move in legal} for legal in moves]

    def _search(self, key: Key, board: chess.Board | None) -> tuple[float, str | None]:
        board = board or chess.Board(key[0])
        move = chess.Move.from_uci(key[1]) if key[1] else None
        engine = self.idle.get()
        try:
            for attempt in range(self.max_restarts + 1):
                try:
                    return engine.analyse(board, self.limit, move)
                # a killed engine surfaces as terminated, or as a cancelled call when its event loop died mid-search
                except (chess.engine.EngineError, chess.engine.EngineTerminatedError, CancelledError, OSError) as error:
                    log.warning("Stockfish failed on %s (%r); restarting it (attempt %d)", key[0], error, attempt + 1)
                    engine.close()
        finally:
            self.idle.put(engine)
        raise EngineError(
            f"the engine `{shlex.join(engine.command)}` died or hung {self.max_restarts + 1} times in a row on "
            f"{key[0]!r}: check that the command runs and speaks UCI (start it, type `uci`, then `quit`) and that "
            "its machine has free memory"
        )

    def close(self) -> None:
        self.workers.shutdown(wait=True)
        for engine in self.engines:
            engine.close()
        if self.disk:
            self.disk.close()
            self.disk = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
