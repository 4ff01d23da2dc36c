"""The chess prompt styles: what each shows of the position, and the answers each asks for."""

import chess
import pytest

from selfplay.config import ConfigError
from selfplay.domains.chess import (ONE_MOVE, PROMPT_STYLES, ChessSettings, check_prompt_style, position_prompt,
                                    random_positions, stop_strings)

FENS = random_positions(40, seed=7) + ["6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1"]  # the last: Ra8# is a legal move


def listed_moves(messages: list[dict]) -> list[str]:
    line = next(line for line in messages[1]["content"].splitlines() if line.startswith("Legal moves: "))
    return line.removeprefix("Legal moves: ").split()


@pytest.mark.parametrize("style", PROMPT_STYLES)
def test_every_style_lists_exactly_the_legal_moves(style):
    for fen in FENS:
        board = chess.Board(fen)
        legal = {move.uci() if style == "uci" else board.san(move) for move in board.legal_moves}
        listed = listed_moves(position_prompt(fen, style))
        assert sorted(listed) == sorted(legal) and len(listed) == len(legal)
    assert "Ra8#" in listed_moves(position_prompt(FENS[-1], "moves"))  # mates are marked in SAN


def test_the_moves_style_shows_the_san_list_without_the_fen():
    for fen in FENS:
        san, moves = position_prompt(fen, "san"), position_prompt(fen, "moves")
        side = "White" if chess.Board(fen).turn == chess.WHITE else "Black"
        assert moves[1]["content"] == f"{side} to move.\nLegal moves: {' '.join(listed_moves(san))}"  # same order
        assert san[1]["content"].startswith(f"FEN: {fen}\n{moves[1]['content']}\n")
        assert "SAN" in moves[0]["content"] and "SAN" in san[0]["content"]
    assert position_prompt(FENS[0]) == position_prompt(FENS[0], "moves")  # the default


def test_the_san_list_is_shuffled_per_position_and_fixed_for_each():
    orders = [listed_moves(position_prompt(fen, "moves")) for fen in FENS]
    assert orders == [listed_moves(position_prompt(fen, "moves")) for fen in FENS]  # the same prompt every time
    assert sum(order != sorted(order) for order in orders) > len(FENS) // 2


def test_san_styles_stop_at_one_move_and_uci_runs_to_the_budget():
    assert stop_strings(ChessSettings(prompt_style="san")) == ONE_MOVE
    assert stop_strings(ChessSettings(prompt_style="moves")) == ONE_MOVE
    assert stop_strings(ChessSettings(prompt_style="uci")) is None


def test_an_unknown_style_names_the_styles():
    with pytest.raises(ConfigError, match="'pgn': choose san, moves or uci"):
        check_prompt_style("pgn")
