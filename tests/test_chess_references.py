"""Reference players, the rank reward and the tactical held-out sets, against real Stockfish and python-chess."""

import chess
import pytest

from rewards.chess import ChessRewards
from rewards.chess_engine import EnginePool
from selfplay.domains.chess_reference import greedy_moves, reference_scores
from selfplay.domains.chess_tactics import mate_in_one_positions, to_epd, winning_move_positions
from selfplay.domains.chess_positions import read_positions

ONLY_MOVE = "k7/8/8/8/8/8/1r6/K7 w - - 0 1"  # Kxb2 is White's only legal move
FREE_QUEEN = "4k3/8/8/3q4/8/8/3R4/4K3 w - - 0 1"  # Rxd5 takes an undefended queen


@pytest.fixture(scope="module")
def pool():
    with EnginePool(size=2, limit=chess.engine.Limit(depth=6)) as pool:
        yield pool


def test_random_legal_on_a_position_with_one_legal_move_is_one(pool):
    board = chess.Board(ONLY_MOVE)
    assert board.legal_moves.count() == 1
    assert reference_scores([board], pool)["random_legal"] == [1.0]


def test_random_legal_is_the_mean_over_every_legal_move(pool):
    board = chess.Board(FREE_QUEEN)
    table = pool.legal_move_scores([board])[0]
    assert set(table) == {move.uci() for move in board.legal_moves}
    assert reference_scores([board], pool)["random_legal"][0] == pytest.approx(sum(table.values()) / len(table))
    assert min(table.values()) < 0.5 < table["d2d5"]  # taking the queen wins; walking into its attack loses


def test_the_greedy_player_takes_a_free_queen_and_mates_when_it_can(pool):
    assert [move.uci() for move in greedy_moves(chess.Board(FREE_QUEEN))] == ["d2d5"]
    back_rank = chess.Board("6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1")
    assert [move.uci() for move in greedy_moves(back_rank)] == ["a1a8"]
    scores = reference_scores([chess.Board(FREE_QUEEN)], pool)
    assert scores["greedy_one_ply"][0] > scores["random_legal"][0]


def test_rank_reward_orders_moves_best_to_worst(pool):
    rank_reward = ChessRewards(pool).rank_reward
    fen = [FREE_QUEEN] * 3 + [ONLY_MOVE]
    rewards = rank_reward(None, ["Rxd5", "Rd4", "e9e9", "Kxb2"], fen=fen)
    assert rewards[0] == 1.0  # the best move
    assert rewards[2] == 0.0  # not a move
    assert 0.0 <= rewards[1] < rewards[0]
    assert rewards[3] == 1.0  # the only legal move
    assert rank_reward(None, ["Rxd5"], fen=[None]) == [None]


def test_every_generated_mate_in_one_is_one():
    positions = mate_in_one_positions(20, seed=11)
    assert len({p.fen for p in positions}) == 20
    for position in positions:
        board = chess.Board(position.fen)
        assert position.best_moves
        for move in board.legal_moves:
            board.push(move)
            assert board.is_checkmate() == (move.uci() in position.best_moves)
            board.pop()


def test_every_winning_move_is_the_engines_best_at_the_stated_limit_far_ahead(pool, tmp_path):
    positions = winning_move_positions(3, seed=5, pool=pool, gap=0.3, batch=8)
    boards = [chess.Board(p.fen) for p in positions]
    assert [(p.best_moves[0],) for p in positions] == [(best,) for best in pool.best_moves(boards)]
    for position, table in zip(positions, pool.legal_move_scores(boards)):
        best = position.best_moves[0]
        assert all(table[best] - value >= 0.3 for move, value in table.items() if move != best)
    epd = tmp_path / "winning.epd"
    epd.write_text("\n".join(map(to_epd, positions)) + "\n")
    assert [p.best_moves for p in read_positions(epd)[0]] == [p.best_moves for p in positions]
