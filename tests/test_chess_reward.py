"""Chess rewards against real Stockfish: parsing, scoring, special moves, bad model outputs."""

import chess
import pytest

from rewards.chess import ChessRewards, EnginePool, format_reward, legal_move_reward, parse_move

START = chess.STARTING_FEN
# White to move; Qh5xf7 is mate (scholar's mate position).
SCHOLAR = "r1bqkb1r/pppp1ppp/2n2n2/4p2Q/2B1P3/8/PPPP1PPP/RNB1K1NR w KQkq - 4 4"
# White to move can castle both ways; a pawn on b7 can promote.
CASTLE_PROMO = "r3k2r/1P6/8/8/8/8/8/R3K2R w KQkq - 0 1"
# White to move; exd6 takes en passant.
EN_PASSANT = "rnbqkbnr/ppp1p1pp/8/3pPp2/8/8/PPPP1PPP/RNBQKBNR w KQkq d6 0 3"
# White to move; Qc8 mates, Qc7 stalemates the king on a8 (a draw thrown away).
STALEMATE_TRAP = "k7/8/1K6/8/8/8/8/2Q5 w - - 0 1"


@pytest.fixture(scope="module")
def engine():
    """The rewards that search, on a pool of two engines."""
    with ChessRewards(EnginePool(size=2, limit=chess.engine.Limit(depth=8))) as rewards:
        yield rewards


@pytest.mark.parametrize(
    "text, uci",
    [
        ("e2e4", "e2e4"),
        ("I play e4.", "e2e4"),
        ("`Nf3`", "g1f3"),
        ("<move>g1f3</move>", "g1f3"),
        ("The best move is Nc3+ obviously", "b1c3"),
        ("**Answer:** d4#", "d2d4"),
    ],
)
def test_parse_move_reads_uci_and_san_in_text(text, uci):
    assert parse_move(chess.Board(START), text) == chess.Move.from_uci(uci)


@pytest.mark.parametrize(
    "fen, text, uci",
    [
        (CASTLE_PROMO, "O-O", "e1g1"),
        (CASTLE_PROMO, "0-0-0", "e1c1"),
        (CASTLE_PROMO, "e1g1", "e1g1"),
        (CASTLE_PROMO, "b7b8q", "b7b8q"),
        (CASTLE_PROMO, "b7a8N", "b7a8n"),
        (CASTLE_PROMO, "bxa8=N+", "b7a8n"),
        (EN_PASSANT, "exd6", "e5d6"),
        (EN_PASSANT, "e5d6", "e5d6"),
    ],
)
def test_parse_move_castling_promotion_en_passant(fen, text, uci):
    assert parse_move(chess.Board(fen), text) == chess.Move.from_uci(uci)


@pytest.mark.parametrize(
    "text",
    ["", "e7e5", "Ke2", "P.P.P.P.", "♔♕♖ 🐴 ñandú", "\x00\xff" * 10, "x" * 100_000, "e2e5 e2e4", "b7b8"],
)
def test_garbage_wrong_side_and_illegal_answers_parse_to_none(text):
    # "e7e5" is Black's move with White to move; "e2e5 e2e4": the first move-shaped token counts, and it is
    # illegal; "b7b8": no pawn there at the start
    assert parse_move(chess.Board(START), text) is None


def test_engine_reward_ranks_mate_above_blunder(engine):
    mate, blunder, illegal = engine.engine_reward([None] * 3, ["h5f7", "h5h6", "a1a8"], fen=[SCHOLAR] * 3)
    assert mate == pytest.approx(1.0)
    assert blunder < 0.5  # the queen is lost for nothing
    assert illegal == 0.0


def test_stalemating_a_won_position_scores_low(engine):
    mate, stalemate = engine.engine_reward([None] * 2, ["Qc8#", "Qc7"], fen=[STALEMATE_TRAP] * 2)
    assert mate == 1.0 and stalemate == pytest.approx(0.5)  # a stalemate is a draw: expected score 0.5 of a win's 1


def test_castling_in_either_notation_scores_the_same(engine):
    uci, san = engine.engine_reward([None] * 2, ["e1g1", "O-O"], fen=[CASTLE_PROMO] * 2)
    assert uci == san and uci > 0


def test_best_move_reward_takes_engine_best_or_bm_column(engine):
    rewards = engine.best_move_reward([None] * 3, ["h5f7", "h5h6", "h5h6"], fen=[SCHOLAR] * 3,
                                      bm=[None, None, ["h5h6"]])
    assert rewards == [1.0, 0.0, 1.0]


def test_format_reward_wants_one_move_and_nothing_else():
    answers = ["e2e4", " `Nf3` ", "<move>O-O</move>", "e2e4 because", "I play e4", "", "e2e4 e2e4"]
    assert format_reward([None] * 7, answers) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_rewards_accept_chat_completions_and_skip_rows_without_fen(engine):
    completions = [[{"role": "assistant", "content": "e2e4"}], "e2e4"]
    assert legal_move_reward([None, None], completions, fen=[START, None]) == [1.0, None]
    rewards = engine.engine_reward([None, None], completions, fen=[START, None])
    assert rewards[0] > 0.8 and rewards[1] is None


def test_hundred_kilobyte_and_unicode_outputs_score_zero(engine):
    outputs = ["ü" * 100_000, "\ud83d\ude00" * 5000, "#" * 100_000]
    assert engine.engine_reward([None] * 3, outputs, fen=[START] * 3) == [0.0, 0.0, 0.0]
    assert format_reward([None] * 3, outputs) == [0.0, 0.0, 0.0]


def test_the_best_move_bonus_weighs_the_engines_own_move_beside_the_train_reward():
    from selfplay.config import make_config
    from selfplay.domains import chess as chess_domain

    for bonus, train_reward in ((0.0, "engine"), (0.5, "engine"), (1.0, "rank")):
        rewards = chess_domain.rewards(make_config(best_move_bonus=bonus, train_reward=train_reward))
        weights = {f.__name__: w for f, w in zip(rewards.funcs, rewards.weights)}
        rewards.close()
        assert weights[f"{train_reward}_reward"] == 1.0 and weights["best_move_reward"] == bonus
        assert sum(weights.values()) == 1.0 + bonus
