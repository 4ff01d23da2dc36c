"""Reference players a chess policy is measured against, scored exactly by the same engine reward.

    reference_scores(boards, pool) -> {"random_legal": [...], "greedy_one_ply": [...]}    # per position, in [0, 1]

- random legal: the mean engine reward over all legal moves of the position, what a uniformly random legal move
  scores on average (exact, no sampling);
- greedy one-ply, a few lines of python-chess and no engine: a mating move if there is one, else a move that leaves
  the best material balance for the side that moved; among equal choices it picks uniformly, so its score is the mean
  over them.

A policy's **skill** is its engine reward minus the random-legal reward of the same position: 0 is random play,
and the greedy player shows what simple material counting earns on the same positions.
"""

import chess

from rewards.chess_engine import EnginePool

PIECE_VALUES = {chess.PAWN: 1, chess.KNIGHT: 3, chess.BISHOP: 3, chess.ROOK: 5, chess.QUEEN: 9, chess.KING: 0}


def material_balance(board: chess.Board, color: chess.Color) -> int:
    """Material of `color` minus the opponent's, in pawns."""
    pieces = board.piece_map().values()
    return sum(PIECE_VALUES[piece.piece_type] * (1 if piece.color == color else -1) for piece in pieces)


def greedy_moves(board: chess.Board) -> list[chess.Move]:
    """The one-ply greedy player's equally good choices: the mating moves, else those with the best material after."""
    mover, values = board.turn, {}
    for move in board.legal_moves:
        board.push(move)
        values[move] = float("inf") if board.is_checkmate() else material_balance(board, mover)
        board.pop()
    best = max(values.values())
    return [move for move, value in values.items() if value == best]


def reference_scores(boards: list[chess.Board], pool: EnginePool) -> dict[str, list[float]]:
    """Per position, the engine reward of the random-legal and greedy one-ply players (searches cached by `pool`)."""
    tables = pool.legal_move_scores(boards)
    random_legal = [sum(table.values()) / len(table) if table else 0.0 for table in tables]
    greedy = []
    for board, table in zip(boards, tables):
        choices = greedy_moves(board) if table else []
        greedy.append(sum(table[move.uci()] for move in choices) / len(choices) if choices else 0.0)
    return {"random_legal": random_legal, "greedy_one_ply": greedy}
