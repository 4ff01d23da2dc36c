"""Chess rewards scored by real Stockfish through python-chess, in TRL's reward-function shape.

Every reward is `f(prompts, completions, *, fen, **kwargs) -> list[float | None]`: `completions` are TRL-style
(plain strings or `[{"role": "assistant", "content": ...}]`), `fen` is the column holding the position the move is
played in, and `None` marks a row that is not chess (no FEN). The function's name is its metric name.

    rewards = ChessRewards(EnginePool(limit=chess.engine.Limit(nodes=20_000), cache_path="evals.sqlite"))
    GRPOTrainer(..., reward_funcs=[rewards.engine_reward, legal_move_reward, format_reward])
    rewards.close()  # or `with ChessRewards() as rewards:`

The rewards that search are methods of a `ChessRewards`, which owns the `EnginePool` they share (by default one
Stockfish per core, depth 8); the others are plain functions:
- `engine_reward`: expected score after the played move relative to the engine's best move, in [0, 1];
- `best_move_reward`: 1 if the move is the engine's best move, or one of the row's `bm` moves (EPD, puzzles);
- `rank_reward`: where the move ranks among all legal moves by engine reward, 1 for the best, 0 for the worst;
- `solve_reward`: 1 if the move is one of the row's `bm` moves and none of its `am` moves (None without them);
- `legal_move_reward`: 1 if the answer names a legal move;
- `format_reward`: 1 if the answer is one move and nothing else (bare, in a code span or in a <move> tag).
A script that ends without `close()` still exits, and its engines end with it (see `rewards.chess_engine`).

The answer is the first move-shaped token (UCI or SAN, `+`/`#` allowed) in the text. Policy failures are rewards:
unparsable or illegal answers score 0. Infrastructure failures are exceptions (`EngineError`, after bounded
restarts).
"""

import logging
import re

import chess

from rewards.chess_engine import EngineError, EnginePool
from rewards.completions import completion_text

__all__ = ["ChessRewards", "EngineError", "EnginePool", "format_reward", "legal_move_reward", "parse_move",
           "solve_reward"]

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


def _boards(fen: list[str | None]) -> list[chess.Board | None]:
    boards = []
    for f in fen:
        try:
            boards.append(chess.Board(f) if f else None)
        except ValueError:
            boards.append(None)
    return boards


def _moves(boards, completions) -> list[chess.Move | None]:
    return [None if board is None else parse_move(board, completion_text(c)) for board, c in zip(boards, completions)]


def legal_move_reward(prompts, completions, *, fen, **kwargs) -> list[float | None]:
    """1 if the answer names a legal move in the position, else 0."""
    boards = _boards(fen)
    return [None if board is None else float(move is not None) for board, move in zip(boards, _moves(boards, completions))]


def solve_reward(prompts, completions, *, fen, bm=None, am=None, **kwargs) -> list[float | None]:
    """1 if the move solves the row's test position: one of its `bm` moves and none of its `am` moves (EPD
    best/avoid moves, the puzzle's solution); None for rows that have neither."""
    boards = _boards(fen)
    rewards = []
    for i, (board, move) in enumerate(zip(boards, _moves(boards, completions))):
        best, avoid = (bm[i] if bm else None) or [], (am[i] if am else None) or []
        if board is None or not (best or avoid):
            rewards.append(None)
            continue
        played = move.uci() if move else None
        rewards.append(float(played is not None and (not best or played in best) and played not in avoid))
    return rewards


ANSWER_ONLY = re.compile(rf"\s*(?:`|<move>)?\s*{MOVE_TOKEN.pattern}\s*(?:`|</move>)?\s*")


def format_reward(prompts, completions, **kwargs) -> list[float]:
    """1 if the answer is one move-shaped token and nothing else (bare, in a code span or a <move> tag), else 0."""
    return [float(ANSWER_ONLY.fullmatch(completion_text(c)[:MAX_ANSWER_CHARS + 1]) is not None) for c in completions]


class ChessRewards:
    """The rewards that search, sharing one engine pool that they own (`EnginePool()` when none is given): `close()`
    (or leaving `with`) ends its engines. Each is a bound method, whose `__name__` TRL takes as its metric name."""

    def __init__(self, pool: EnginePool | None = None):
        self.pool = pool if pool is not None else EnginePool()

    def engine_reward(self, prompts, completions, *, fen, **kwargs) -> list[float | None]:
        """Expected score after the played move relative to the engine's best, in [0, 1]; 0 if illegal or
        unparsable."""
        boards = _boards(fen)
        moves = _moves(boards, completions)
        scored = [i for i, move in enumerate(moves) if move is not None]
        scores = dict(zip(scored, self.pool.score_moves([(boards[i], moves[i]) for i in scored])))
        return [None if board is None else scores.get(i, 0.0) for i, board in enumerate(boards)]

    def rank_reward(self, prompts, completions, *, fen, **kwargs) -> list[float | None]:
        """The share of the other legal moves that score no better than the played one (ties count half): 1 for the
        best move, 0 for the worst, 1 when it is the only move; 0 if illegal or unparsable.

        The engine reward squeezes every move that does not lose towards 1; the rank spreads a group's answers evenly
        between the best and the worst move of the position, whatever its evaluation."""
        boards = _boards(fen)
        moves = _moves(boards, completions)
        scored = [i for i, move in enumerate(moves) if move is not None]
        tables = dict(zip(scored, self.pool.legal_move_scores([boards[i] for i in scored])))
        rewards = []
        for i, board in enumerate(boards):
            if board is None or i not in tables:
                rewards.append(None if board is None else 0.0)
                continue
            played, others = tables[i][moves[i].uci()], [v for m, v in tables[i].items() if m != moves[i].uci()]
            if not others:
                rewards.append(1.0)
                continue
            rewards.append(sum(1.0 if v < played else 0.5 if v == played else 0.0 for v in others) / len(others))
        return rewards

    def best_move_reward(self, prompts, completions, *, fen, bm=None, **kwargs) -> list[float | None]:
        """1 if the move is the engine's best move or one of the row's `bm` moves (UCI list), else 0."""
        boards = _boards(fen)
        moves = _moves(boards, completions)
        scored = [i for i, move in enumerate(moves) if move is not None]
        engine_best = dict(zip(scored, self.pool.best_moves([boards[i] for i in scored])))
        rewards = []
        for i, (board, move) in enumerate(zip(boards, moves)):
            if board is None:
                rewards.append(None)
                continue
            solutions = {engine_best.get(i), *((bm[i] or []) if bm else [])}
            rewards.append(float(move is not None and move.uci() in solutions))
        return rewards

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> "ChessRewards":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
