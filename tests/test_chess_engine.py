"""The Stockfish pool: batches, the evaluation cache on disk, crashed and hung engines, no orphan processes."""

import os
import signal
import threading

import chess
import chess.engine
import psutil
import pytest

from rewards.chess_engine import EngineError, EnginePool, find_stockfish, parse_limit
from selfplay.domains.chess import random_positions

LIMIT = chess.engine.Limit(depth=6)


def batch(count: int, seed: int = 0) -> list[tuple[chess.Board, chess.Move]]:
    """One (position, first legal move) pair per random position: every pair is a new evaluation."""
    boards = [chess.Board(fen) for fen in random_positions(count, seed=seed)]
    return [(board, next(iter(board.legal_moves))) for board in boards]


def stockfish_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if "stockfish" in p.name()]


def test_duplicates_in_a_batch_are_searched_once():
    pairs = batch(3)
    with EnginePool(size=2, limit=LIMIT) as pool:
        scores = pool.score_moves(pairs * 4)
        assert pool.evaluations == 6  # 3 positions x (best move, played move)
    assert scores[:3] * 4 == scores and all(0.0 <= s <= 1.0 for s in scores)


def test_a_groups_shared_searches_give_the_rewards_of_one_search_per_answer():
    # a GRPO group: one position, 8 answers repeating 3 moves; the naive reward is two fresh searches per answer, with
    # python-chess's `analyse` and Stockfish's own settings
    board = chess.Board(random_positions(1, seed=4)[0])
    moves = list(board.legal_moves)[:3]
    answers = [moves[i % 3] for i in (0, 1, 1, 2, 0, 0, 2, 1)]
    with chess.engine.SimpleEngine.popen_uci(find_stockfish()) as engine:
        def value(move):
            info = engine.analyse(board, LIMIT, root_moves=[move] if move else None, game=object())
            return info["score"].pov(board.turn).wdl().expectation()

        best = value(None)
        naive = [1.0 - (max(best, value(move)) - value(move)) for move in answers]
        best_move = engine.analyse(board, LIMIT, game=object())["pv"][0].uci()
    with EnginePool(size=2, limit=LIMIT) as pool:
        assert pool.score_moves([(board, move) for move in answers]) == naive
        assert pool.evaluations == 4  # the position's best move once, each distinct played move once
        assert pool.best_moves([board]) == [best_move]


def test_disk_cache_serves_a_second_pool_without_searching(tmp_path):
    pairs = batch(4)
    with EnginePool(size=2, limit=LIMIT, cache_path=tmp_path / "evals.sqlite") as pool:
        first = pool.score_moves(pairs)
    with EnginePool(size=2, limit=LIMIT, cache_path=tmp_path / "evals.sqlite") as pool:
        assert pool.score_moves(pairs) == first and pool.evaluations == 0
    with EnginePool(size=2, limit=chess.engine.Limit(depth=5), cache_path=tmp_path / "evals.sqlite") as pool:
        pool.score_moves(pairs)
        assert pool.evaluations == 8  # another limit is another key


def test_engine_killed_in_the_middle_of_a_batch_still_gives_every_reward():
    pairs = batch(24, seed=1)
    with EnginePool(size=2, limit=chess.engine.Limit(depth=12)) as pool:
        pool.score_moves(pairs[:1])  # engines up
        killer = threading.Timer(0.3, lambda: [p.kill() for p in stockfish_children()[:1]])
        killer.start()
        scores = pool.score_moves(pairs[1:])
        killer.join()
    assert len(scores) == 23 and all(0.0 <= s <= 1.0 for s in scores)


def test_hung_engine_is_killed_and_the_search_retried():
    pairs = batch(2, seed=2)
    with EnginePool(size=1, limit=LIMIT, timeout=2.0) as pool:
        pool.score_moves(pairs[:1])
        os.kill(pool.engines[0].pid, signal.SIGSTOP)  # alive but silent
        assert 0.0 <= pool.score_moves(pairs[1:])[0] <= 1.0
        assert pool.engines[0].pid is not None and psutil.Process(pool.engines[0].pid).status() != "stopped"


def test_close_leaves_no_engine_process():
    with EnginePool(size=2, limit=LIMIT) as pool:
        pool.score_moves(batch(4, seed=3))
        assert len(stockfish_children()) == 2
    assert stockfish_children() == []


def test_engine_that_cannot_start_raises_a_clear_error(tmp_path):
    broken = tmp_path / "stockfish"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    with EnginePool(size=1, limit=LIMIT, commands=[str(broken)]) as pool:
        with pytest.raises(EngineError, match=f"the engine `{broken}` died or hung 3 times in a row"):
            pool.score_moves(batch(1))


def test_an_engine_given_as_a_command_scores_as_stockfish_does(tmp_path):
    """--engine CMD: a wrapper script (as `ssh host stockfish` would be) with arguments, two processes taking it
    in turn with the plain binary; the same rewards as a pool of the local Stockfish, and the wrapper ran."""
    started = tmp_path / "started"
    wrapper = tmp_path / "remote stockfish.sh"  # a space in the path: the command is split as a shell would
    wrapper.write_text(f'#!/bin/sh\necho "$1" >> "{started}"\nexec {find_stockfish()}\n')
    wrapper.chmod(0o755)
    pairs = batch(6, seed=5)
    with EnginePool(size=2, limit=LIMIT) as local:
        expected = local.score_moves(pairs)
    with EnginePool(size=2, limit=LIMIT, commands=[f"'{wrapper}' box1", find_stockfish()]) as pool:
        assert pool.score_moves(pairs) == expected
        assert [engine.command for engine in pool.engines] == [[str(wrapper), "box1"], [find_stockfish()]]
    assert started.read_text().split() == ["box1"]


@pytest.mark.parametrize("text", ["depth=0", "nodes=abc", "speed=3", "", "time=-1"])
def test_malformed_limit_is_rejected(text):
    with pytest.raises(ValueError, match="depth=N, nodes=N or time=SECONDS"):
        parse_limit(text)


def test_engine_cache_that_is_not_ours_is_a_clear_error_and_left_untouched(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a database\n" * 100)
    with pytest.raises(EngineError, match="give another --engine-cache file"):
        EnginePool(size=1, limit=LIMIT, cache_path=notes)
    assert notes.read_text() == "my notes, not a database\n" * 100
