"""Chess positions from files (EPD, FEN lists, Lichess puzzle CSV, PGN) and the `--positions` mix spec.

    positions, skipped = read_positions("puzzles.csv", skip_bad=True)
    parse_position_mix("puzzles.csv:3,random:1")  # [("puzzles.csv", 3.0), ("random", 1.0)]

Every source yields positions the model must move in: finished games (mate, stalemate, insufficient
material) are dropped, and a position seen twice (same placement, side, castling and en passant; move
counters ignored) keeps its first occurrence. A malformed entry raises `PositionFileError` naming file
and line, or with `skip_bad=True` is skipped, counted and logged once.
"""

import csv
import io
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import chess
import chess.pgn

logger = logging.getLogger(__name__)

KEYWORD_SOURCES = ("random", "mate_in_one", "selfplay")
_RESULTS = {"1-0", "0-1", "1/2-1/2", "*"}
_WEIGHT = re.compile(r"[-+]?[\d.]+(?:e[-+]?\d+)?", re.IGNORECASE)
_MAX_MESSAGE = 200  # a 100 KB garbage line must not become a 100 KB error message


@dataclass(frozen=True)
class Position:
    """A position to move in, with what is known about the right answer."""

    fen: str  # never a finished game
    best_moves: tuple[str, ...] = ()  # UCI moves that solve it (EPD `bm`, the puzzle's solution move)
    avoid_moves: tuple[str, ...] = ()  # UCI moves to avoid (EPD `am`)
    id: str | None = None  # EPD `id`, Lichess PuzzleId, "<game>:<ply>" for PGN, else "<file>:<line>"
    rating: int | None = None  # Lichess puzzle rating when known


class PositionFileError(ValueError):
    """A position file that cannot be used; the message starts with "<path>:<line>: "."""


def read_positions(path: str | Path, *, skip_bad: bool = False) -> tuple[list[Position], int]:
    """Positions in a file and the number of bad entries skipped; the format comes from the extension.

    `.epd`: one EPD per line (`bm`, `am`, `id` kept). `.fen`/`.txt`: one FEN per line (the move counters
    may be left out). `.csv`: Lichess puzzles, header optional; the FEN is before the opponent's move, so
    Moves[0] is played and Moves[1] is the best move. `.pgn`: every position before a mainline move of
    every game; a malformed game is one bad entry reported at the line where the game starts (its first
    tag, or its first movetext line when it has no tags). Blank lines and `#` lines are skipped.
    Raises FileNotFoundError for a missing file, PositionFileError for an unknown extension, for a
    file without positions (line 0), and, unless `skip_bad`, for the first malformed entry.
    """
    path = Path(path)
    if path.suffix.lower() not in _FORMATS:
        accepted = ", ".join(_FORMATS)
        raise PositionFileError(f"{path}:0: unknown position file extension {path.suffix!r}; accepted: {accepted}")
    split, parse = _FORMATS[path.suffix.lower()]
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    positions: list[Position] = []
    seen: set[str] = set()
    skipped = 0
    first_error: PositionFileError | None = None
    for number, (line, entry) in enumerate(split(text), 1):
        try:
            found = parse(entry, number)
        except ValueError as exc:  # python-chess reports every parse problem as a ValueError subclass
            error = PositionFileError(f"{path}:{line}: {str(exc)[:_MAX_MESSAGE]}")
            if not skip_bad:
                raise error from None
            skipped, first_error = skipped + 1, first_error or error
            continue
        for position in found:
            key = " ".join(position.fen.split()[:4])
            if key in seen or chess.Board(position.fen).is_game_over():
                continue
            seen.add(key)
            positions.append(position if position.id else replace(position, id=f"{path.name}:{line}"))
    if skipped:
        logger.warning("%s: skipped %d bad entries; the first: %s", path, skipped, first_error)
    if not positions:
        detail = f" ({skipped} bad entries skipped; the first: {first_error})" if skipped else ""
        raise PositionFileError(f"{path}:0: no positions{detail}")
    return positions, skipped


def parse_position_mix(spec: str) -> list[tuple[str, float]]:
    """`--positions` value → [(source, weight)]: "random", "puzzles.csv", "a.epd:3,random:1".

    A source is "random", "mate_in_one", "selfplay" or a file path; a trailing ":<number>" is its weight (default 1,
    must be > 0), so a path may contain ':' elsewhere. Raises ValueError for an empty source, a bad
    weight or a source listed twice.
    """
    mix: list[tuple[str, float]] = []
    for part in spec.split(","):
        source, weight = part.strip(), 1.0
        head, colon, tail = source.rpartition(":")
        if colon and (head.strip() in KEYWORD_SOURCES or not tail.strip() or _WEIGHT.fullmatch(tail.strip())):
            source, weight = head.strip(), _parse_weight(tail, spec)
        if not source:
            raise ValueError(f"--positions {spec!r}: empty source; expected e.g. 'puzzles.csv:3,random:1'")
        if any(source == listed for listed, _ in mix):
            raise ValueError(f"--positions {spec!r}: source {source!r} is listed twice")
        mix.append((source, weight))
    return mix


def _parse_weight(text: str, spec: str) -> float:
    try:
        weight = float(text)
    except ValueError:
        weight = float("nan")
    if not 0 < weight < float("inf"):  # also rejects nan
        raise ValueError(f"--positions {spec!r}: weight {text.strip()!r} must be a number > 0")
    return weight


def _checked(board: chess.Board) -> chess.Board:
    status = board.status()
    if status != chess.STATUS_VALID:
        problems = ", ".join(flag.name.lower().replace("_", " ") for flag in chess.Status if flag and flag in status)
        raise ValueError(f"impossible position ({problems}): {board.fen()}")
    return board


def _legal(board: chess.Board, uci: str) -> chess.Move:
    move = chess.Move.from_uci(uci)
    if not move or not board.is_legal(move):  # a null move "0000" is never an answer
        raise ValueError(f"illegal move {uci} in {board.fen()}")
    return move


def _content_lines(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield number, line


def _epd_position(line: str, _number: int) -> list[Position]:
    _checked(chess.Board(" ".join(line.split()[:4])))  # first, because `bm`/`am` are parsed in this position
    board = chess.Board()
    ops = board.set_epd(line)
    ident = ops.get("id")
    best, avoid = _ucis(ops, "bm"), _ucis(ops, "am")
    return [Position(board.fen(), best_moves=best, avoid_moves=avoid, id=None if ident is None else str(ident))]


def _ucis(ops: dict, opcode: str) -> tuple[str, ...]:
    moves = ops.get(opcode, [])
    if not isinstance(moves, list):
        raise ValueError(f"EPD operation {opcode!r} must list moves, got {moves!r}")
    return tuple(move.uci() for move in moves)


def _fen_position(line: str, _number: int) -> list[Position]:
    return [Position(_checked(chess.Board(line)).fen())]


def _puzzle_position(line: str, _number: int) -> list[Position]:
    try:
        row = next(csv.reader([line]))
    except csv.Error as exc:
        raise ValueError(f"bad CSV: {exc}") from None
    if row[:1] == ["PuzzleId"]:  # the header line
        return []
    if len(row) < 3:
        raise ValueError(f"expected PuzzleId,FEN,Moves,Rating,...; got {len(row)} field(s)")
    puzzle_id, fen, moves = row[0].strip(), row[1], row[2].split()
    if len(moves) < 2:
        raise ValueError(f"puzzle {puzzle_id}: Moves needs the opponent's move and the solution, got {row[2]!r}")
    board = _checked(chess.Board(fen))
    board.push(_legal(board, moves[0]))
    solution = _legal(board, moves[1]).uci()
    rating = row[3].strip() if len(row) > 3 else ""
    if rating and not rating.isdigit():
        raise ValueError(f"puzzle {puzzle_id}: rating {rating!r} is not a whole number")
    return [Position(board.fen(), best_moves=(solution,), id=puzzle_id or None, rating=int(rating) if rating else None)]


def _pgn_games(text: str) -> Iterator[tuple[int, str]]:
    """(first line, text) per game: a game ends after its result token or where the next tag section starts."""
    start, in_moves = 0, False
    chunk: list[str] = []
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if in_moves and stripped.startswith("["):
            yield start, "\n".join(chunk)
            chunk, in_moves = [], False
        if not chunk:
            if not stripped:
                continue
            start = number
        chunk.append(line)
        if stripped and not stripped.startswith(("[", "%")):
            in_moves = True
            if stripped.split()[-1] in _RESULTS:
                yield start, "\n".join(chunk)
                chunk, in_moves = [], False
    if chunk:
        yield start, "\n".join(chunk)


class _QuietGameBuilder(chess.pgn.GameBuilder):
    """Keeps PGN errors in `game.errors` without python-chess's own log line; read_positions reports them."""

    def handle_error(self, error: Exception) -> None:
        self.game.errors.append(error)


def _game_positions(text: str, number: int) -> list[Position]:
    game = chess.pgn.read_game(io.StringIO(text), Visitor=_QuietGameBuilder)
    if game is None:
        return []
    if game.errors:
        raise ValueError(f"game {number}: {game.errors[0]}")
    board = _checked(game.board())
    positions = []
    for ply, move in enumerate(game.mainline_moves()):
        positions.append(Position(board.fen(), id=f"{number}:{ply}"))
        board.push(move)
    return positions


_Splitter = Callable[[str], Iterator[tuple[int, str]]]
_Parser = Callable[[str, int], list[Position]]  # (entry text, 1-based entry number) → positions
_FORMATS: dict[str, tuple[_Splitter, _Parser]] = {
    ".epd": (_content_lines, _epd_position),
    ".fen": (_content_lines, _fen_position),
    ".txt": (_content_lines, _fen_position),
    ".csv": (_content_lines, _puzzle_position),
    ".pgn": (_pgn_games, _game_positions),
}
