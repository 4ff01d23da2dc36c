"""Chess rewards against real Stockfish: parsing, scoring, bad model outputs, a crashed engine."""

import chess
import pytest

from rewards.chess import EngineError, EngineReward, StockfishJudge, legal_move_reward, parse_move

START = chess.STARTING_FEN
# White to move; Qh5xf7 is mate (scholar's mate position).
SCHOLAR = "r1bqkb1r/pppp1ppp/2n2n2/4p2Q/2B1P3/8/PPPP1PPP/RNB1K1NR w KQkq - 4 4"
# White to move can castle both ways; a pawn on b7 can promote.
CASTLE_PROMO = "r3k2r/1P6/8/8/8/8/8/R3K2R w KQkq - 0 1"


@pytest.fixture(scope="module")
def judge():
    with StockfishJudge(depth=8) as judge:
        yield judge


@pytest.mark.parametrize(
    "text, uci",
    [
        ("e2e4", "e2e4"),
        ("I play e4.", "e2e4"),
        ("`Nf3`", "g1f3"),
        ("<move>g1f3</move>", "g1f3"),
        ("The best move is Nc3+ obviously", "b1c3"),
    ],
)
def test_parse_move_reads_uci_and_san_in_text(text, uci):
    assert parse_move(chess.Board(START), text) == chess.Move.from_uci(uci)


@pytest.mark.parametrize("text, uci", [("O-O", "e1g1"), ("0-0-0", "e1c1"), ("e1g1", "e1g1"), ("b7b8q", "b7b8q"), ("bxa8=N", "b7a8n")])
def test_parse_move_castling_and_promotion(text, uci):
    assert parse_move(chess.Board(CASTLE_PROMO), text) == chess.Move.from_uci(uci)


@pytest.mark.parametrize(
    "text",
    ["", "e7e5", "Ke2", "P.P.P.P.", "♔♕♖ 🐴 ñandú", "\x00\xff" * 10, "x" * 100_000, "e2e5 e2e4"],
)
def test_garbage_wrong_side_and_illegal_answers_parse_to_none(text):
    # "e7e5" is Black's move with White to move; "e2e5 e2e4": the first move-shaped token counts, and it is illegal
    assert parse_move(chess.Board(START), text) is None


def test_engine_reward_ranks_mate_above_blunder(judge):
    reward = EngineReward(judge)
    mate, blunder, illegal = reward([None] * 3, ["h5f7", "h5h6", "a1a8"], fen=[SCHOLAR] * 3)
    assert mate == pytest.approx(1.0)
    assert blunder < 0.5  # the queen is lost for nothing
    assert illegal == 0.0


def test_rewards_accept_chat_completions_and_skip_rows_without_fen(judge):
    completions = [[{"role": "assistant", "content": "e2e4"}], "e2e4"]
    assert legal_move_reward([None, None], completions, fen=[START, None]) == [1.0, None]
    rewards = EngineReward(judge)([None, None], completions, fen=[START, None])
    assert rewards[0] > 0.8 and rewards[1] is None


def test_hundred_kilobyte_and_unicode_outputs_score_zero(judge):
    outputs = ["ü" * 100_000, "\ud83d\ude00" * 5000, "#" * 100_000]
    assert EngineReward(judge)([None] * 3, outputs, fen=[START] * 3) == [0.0, 0.0, 0.0]


def test_killed_engine_is_restarted_and_the_reward_still_comes(judge):
    reward = EngineReward(judge)
    reward([None], ["e2e4"], fen=[START])
    judge.engine.transport.get_pid()  # the process is up
    import os
    import signal

    os.kill(judge.engine.transport.get_pid(), signal.SIGKILL)
    assert reward([None], ["d2d4"], fen=[START])[0] > 0.8  # a new position and move: no cache hit


def test_engine_that_cannot_start_raises_a_clear_error(tmp_path):
    broken = tmp_path / "stockfish"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    with pytest.raises(EngineError, match="died 3 times"):
        StockfishJudge(path=str(broken)).expectation(chess.Board())
