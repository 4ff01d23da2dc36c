"""Chess rewards scored by real Stockfish through python-chess, in TRL's reward-function shape.

Every reward is `f(prompts, completions, *, fen, **kwargs) -> list[float | None]`: `completions` are TRL-style
(plain strings or `[{"role": "assistant", "content": ...}]`), `fen` is the column holding the position the move is
played in, and `None` marks a row that is not chess (no FEN). The function's name is its metric name.

    judge = StockfishJudge(depth=8)
    reward = EngineReward(judge)                 # reward(prompts, completions, fen=[...]) -> [0.93, 0.0, ...]
    legal_move_reward(prompts, completions, fen=[...])

Policy failures are rewards: an unparsable or illegal answer scores 0. Infrastructure failures are exceptions: a
Stockfish process that dies is restarted and the position retried a bounded number of times, then `EngineError`
says what to do.
"""

import logging
import os
import re
import shutil

import chess
import chess.engine

from rewards.completions import completion_text

log = logging.getLogger(__name__)

# A UCI move, or a SAN move (castling, piece moves, pawn moves with promotion), with optional check/mate suffix.
MOVE_TOKEN = re.compile(
    r"(?<![A-Za-z0-9])("
    r"[a-h][1-8][a-h][1-8][qrbnQRBN]?"
    r"|[O0]-[O0](?:-[O0])?"
    r"|[KQRBN][a-h]?[1-8]?x?[a-h][1-8]"
    r"|[a-h](?:x[a-h])?[1-8](?:=?[QRBN])?"
    r")[+#]?(?![A-Za-z0-9])"
)
MAX_ANSWER_CHARS = 4096  # look no further than this for the move: bounded work on a 100 KB output


class EngineError(RuntimeError):
    """Stockfish cannot be started or keeps dying; the message says what to do."""


def parse_move(board: chess.Board, text: str) -> chess.Move | None:
    """The move the answer names: the first move-shaped token (UCI or SAN), or None if it is absent or illegal."""
    match = MOVE_TOKEN.search(text[:MAX_ANSWER_CHARS])
    if match is None:
        return None
    token = match.group(1).replace("0", "O")
    try:
        if re.fullmatch(r"[a-h][1-8][a-h][1-8][qrbnQRBN]?", token):
            move = chess.Move.from_uci(token.lower())
            # python-chess accepts the king-takes-rook castling encoding only as legal moves; keep standard UCI
            return move if board.is_legal(move) else None
        return board.parse_san(token)
    except ValueError:  # illegal, ambiguous or not a move at all
        return None


def find_stockfish() -> str:
    """The Stockfish binary: $SELFPLAY_STOCKFISH, then PATH, then Debian's games directory."""
    for candidate in (os.environ.get("SELFPLAY_STOCKFISH"), shutil.which("stockfish"), "/usr/games/stockfish"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise EngineError("Stockfish not found: `apt-get install stockfish` (or `make setup`), or set SELFPLAY_STOCKFISH")


class StockfishJudge:
    """One Stockfish process that scores moves as expected score (win=1, draw=0.5) for the side to move.

    Scores are cached by (position, move): a GRPO group repeats the same moves many times.
    """

    def __init__(self, *, depth: int = 8, path: str | None = None, max_restarts: int = 2):
        self.limit = chess.engine.Limit(depth=depth)
        self.path = path or find_stockfish()
        self.max_restarts = max_restarts
        self.cache: dict[tuple[str, str | None], float] = {}
        self.engine = None

    def expectation(self, board: chess.Board, move: chess.Move | None = None) -> float:
        """Expected score for the side to move, playing `move` (or the engine's best move when None)."""
        key = (board.fen(), move.uci() if move else None)
        if key not in self.cache:
            root_moves = [move] if move else None
            info = self._analyse(board, root_moves)
            self.cache[key] = info["score"].pov(board.turn).wdl().expectation()
        return self.cache[key]

    def score_move(self, board: chess.Board, move: chess.Move) -> float:
        """1 for a move as good as the engine's best, down to 0 as it loses expected score."""
        best = max(self.expectation(board), self.expectation(board, move))  # a deeper-looking move can beat "best"
        return 1.0 - (best - self.expectation(board, move))

    def _analyse(self, board: chess.Board, root_moves) -> dict:
        for attempt in range(self.max_restarts + 1):
            try:
                if self.engine is None:
                    self.engine = chess.engine.SimpleEngine.popen_uci(self.path)
                return self.engine.analyse(board, self.limit, root_moves=root_moves)
            except (chess.engine.EngineError, chess.engine.EngineTerminatedError, OSError) as error:
                log.warning("Stockfish failed (%s); restarting (attempt %d)", error, attempt + 1)
                self.close()
        raise EngineError(
            f"Stockfish ({self.path}) died {self.max_restarts + 1} times in a row on {board.fen()!r}: "
            "check that the binary runs (`stockfish` then `quit`) and that the machine has free memory"
        )

    def close(self) -> None:
        if self.engine is not None:
            try:
                self.engine.quit()
            except (chess.engine.EngineError, chess.engine.EngineTerminatedError, OSError, TimeoutError):
                self.engine.close()
            self.engine = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _boards(fen: list[str | None]) -> list[chess.Board | None]:
    boards = []
    for f in fen:
        try:
            boards.append(chess.Board(f) if f else None)
        except ValueError:
            boards.append(None)
    return boards


def legal_move_reward(prompts, completions, *, fen, **kwargs) -> list[float | None]:
    """1 if the answer names a legal move in the position, else 0."""
    return [
        None if board is None else float(parse_move(board, completion_text(c)) is not None)
        for board, c in zip(_boards(fen), completions)
    ]


class EngineReward:
    """Expected score of the played move relative to the engine's best, in [0, 1]; 0 for illegal or unparsable."""

    __name__ = "engine_reward"

    def __init__(self, judge: StockfishJudge):
        self.judge = judge

    def __call__(self, prompts, completions, *, fen, **kwargs) -> list[float | None]:
        rewards = []
        for board, completion in zip(_boards(fen), completions):
            if board is None:
                rewards.append(None)
                continue
            move = parse_move(board, completion_text(completion))
            rewards.append(0.0 if move is None else self.judge.score_move(board, move))
        return rewards
