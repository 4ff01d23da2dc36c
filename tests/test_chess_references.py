"""Reference players, the rank reward and the tactical held-out sets, against real Stockfish and python-chess."""

import json
import random

import chess
import pytest

from rewards.chess import ChessRewards
from rewards.chess_engine import EnginePool
from selfplay.domains.chess_reference import greedy_moves, reference_scores
from selfplay.domains import chess_tactics
from selfplay.domains.chess_tactics import capture_biased_playout, mate_in_one_positions, to_epd, winning_move_positions
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


def plain_playout(rng: random.Random) -> chess.Board:
    """The playout as first written (python-chess's own capture and game-over checks): the held-out sets' positions."""
    board = chess.Board()
    for _ in range(rng.randint(8, 70)):
        moves = list(board.legal_moves)
        captures = [move for move in moves if board.is_capture(move)]
        board.push(rng.choice(captures if captures and rng.random() < 0.3 else moves))
        if board.is_game_over():
            board.pop()
            break
    return board


@pytest.mark.parametrize("seed", [3, 1_000_003])
def test_the_playouts_are_the_plain_ones(seed):
    fast, plain = random.Random(seed), random.Random(seed)
    for _ in range(300):  # en passant captures (7-10) and promotions (13-21) come up in 300 games
        assert capture_biased_playout(fast).fen() == plain_playout(plain).fen()
    assert fast.random() == plain.random()  # the same draws from the seed


def test_mates_in_one_come_back_from_the_cache_as_made(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFPLAY_CACHE", str(tmp_path))
    made = mate_in_one_positions(12, seed=5)
    cached = tmp_path / "positions" / "mate_in_one-5.json"
    assert cached.exists()

    def must_not_make(count, *, seed):
        raise AssertionError("made again although the cache holds them")

    with monkeypatch.context() as patch:
        patch.setattr(chess_tactics, "make_mate_in_one_positions", must_not_make)
        assert mate_in_one_positions(12, seed=5) == made
        assert mate_in_one_positions(7, seed=5) == made[:7]  # a shorter list is the head of a longer one
    assert mate_in_one_positions(14, seed=5)[:12] == made  # more than cached: made again, the head unchanged


@pytest.mark.parametrize("content", ["{not json", '{"playouts": 1}', "[1, 2]", "",
                                     '{"playouts": 0, "python-chess": "%s", "positions": []}' % chess.__version__])
def test_a_broken_or_stale_position_cache_is_made_again(tmp_path, monkeypatch, content):
    monkeypatch.setenv("SELFPLAY_CACHE", str(tmp_path))
    fresh = chess_tactics.make_mate_in_one_positions(5, seed=9)
    cached = tmp_path / "positions" / "mate_in_one-9.json"
    cached.parent.mkdir()
    cached.write_text(content)
    assert mate_in_one_positions(5, seed=9) == fresh
    assert json.loads(cached.read_text())["positions"][0][0] == fresh[0].fen  # rewritten


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
