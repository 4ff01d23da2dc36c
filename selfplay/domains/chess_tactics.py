"""Tactical positions made from seeded random playouts, each with its solution as `bm`.

    mate_in_one_positions(100, seed=3_000_003)                 # every mating move as bm (checked by python-chess)
    winning_move_positions(100, seed=4_000_003, pool=pool)     # bm: the engine's best, far ahead of every other move

The playouts are random games of 8-70 plies that take a capture 30% of the time when one exists (so material comes
off the board and kings get exposed, as in real games). About one in 50 ends with a mate in one, so 200 of them take
~30 s of python-chess: the positions depend only on the seed (a shorter list is the head of a longer one), and they
are kept in the cache directory (`~/.cache/selfplay/positions/`) for the next run. A winning-move position is one
where, at the pool's search limit, the engine's best move keeps at least `gap` more expected score than every other
legal move (each searched as the only root move): a piece to take, a fork, a mate in a few; a player that does not
see it gives that much away.
"""

import json
import logging
import os
import random
import tempfile

import chess

from rewards.chess_engine import EnginePool
from selfplay.domains.chess_positions import Position
from selfplay.model import cache_dir

log = logging.getLogger(__name__)
PLAYOUT_VERSION = 1  # bump when a seed's playouts change: cached positions of another version are made again


def capture_biased_playout(rng: random.Random, *, min_plies: int = 8, max_plies: int = 70,
                           capture_share: float = 0.3) -> chess.Board:
    """A random game that takes a capture `capture_share` of the time when one exists; never a finished game."""
    board = chess.Board()
    moves = list(board.legal_moves)  # generated once a ply: they also say whether the game is over
    for _ in range(rng.randint(min_plies, max_plies)):
        them, ep = board.occupied_co[not board.turn], board.ep_square
        captures = [move for move in moves
                    if them >> move.to_square & 1 or move.to_square == ep and board.is_en_passant(move)]
        board.push(rng.choice(captures if captures and rng.random() < capture_share else moves))
        moves = list(board.legal_moves)
        if not moves or board.is_insufficient_material() or board.is_seventyfive_moves() \
                or board.is_fivefold_repetition():  # board.is_game_over(), without generating the moves again
            board.pop()
            break
    return board


def mating_moves(board: chess.Board) -> list[chess.Move]:
    mates = []
    for move in board.legal_moves:
        board.push(move)
        if board.is_checkmate():
            mates.append(move)
        board.pop()
    return mates


def mate_in_one_positions(count: int, *, seed: int) -> list[Position]:
    """`count` distinct positions with a mate in one for the side to move; bm = every mating move. Read from the
    cache when it holds as many for this seed, else made and cached."""
    path = cache_dir() / "positions" / f"mate_in_one-{seed}.json"
    cached = read_cached_positions(path)
    if len(cached) >= count:
        return cached[:count]
    positions = make_mate_in_one_positions(count, seed=seed)
    write_cached_positions(path, positions)
    return positions


def make_mate_in_one_positions(count: int, *, seed: int) -> list[Position]:
    rng, positions, seen = random.Random(seed), [], set()
    while len(positions) < count:
        board = capture_biased_playout(rng)
        mates = mating_moves(board)
        if mates and board.fen() not in seen:
            seen.add(board.fen())
            solutions = tuple(move.uci() for move in mates)
            positions.append(Position(board.fen(), solutions, id=f"mate1-{seed}-{len(positions)}"))
    return positions


def read_cached_positions(path) -> list[Position]:
    """The positions cached at `path`; none when it is missing, unreadable or made by other playouts."""
    try:
        cached = json.loads(path.read_text())
        if cached["playouts"] != PLAYOUT_VERSION or cached["python-chess"] != chess.__version__:
            return []
        return [Position(fen, tuple(best), id=id_) for fen, best, id_ in cached["positions"]]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("ignoring the cached positions in %s (%s): making them again", path, error)
        return []


def write_cached_positions(path, positions: list[Position]) -> None:
    """Written atomically (a temporary file renamed): a run reading it never sees half a file. A cache that cannot be
    written is logged and skipped: the next run makes the positions again."""
    rows = [[p.fen, list(p.best_moves), p.id] for p in positions]
    text = json.dumps({"playouts": PLAYOUT_VERSION, "python-chess": chess.__version__, "positions": rows})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except OSError as error:
        log.warning("cannot cache positions in %s (%s)", path, error)


def winning_move_positions(count: int, *, seed: int, pool: EnginePool, gap: float = 0.3,
                           batch: int = 16) -> list[Position]:
    """`count` distinct positions without a mate in one where the engine's best move (free search, at `pool`'s
    limit) scores at least `gap` above every other legal move; bm = that move. Searched `batch` positions at a time."""
    rng, positions, seen = random.Random(seed), [], set()
    while len(positions) < count:
        boards = []
        while len(boards) < batch:
            board = capture_biased_playout(rng)
            if board.fen() not in seen and not mating_moves(board) and board.legal_moves.count() > 1:
                seen.add(board.fen())
                boards.append(board)
        for board, best, table in zip(boards, pool.best_moves(boards), pool.legal_move_scores(boards)):
            others = [value for move, value in table.items() if move != best]
            if best in table and table[best] - max(others) >= gap and len(positions) < count:
                positions.append(Position(board.fen(), (best,), id=f"win-{seed}-{len(positions)}"))
    return positions


def to_epd(position: Position) -> str:
    board = chess.Board(position.fen)
    return board.epd(bm=[chess.Move.from_uci(move) for move in position.best_moves], id=position.id)
