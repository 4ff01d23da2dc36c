"""Arena matches against real Stockfish at its weakest setting, and the Elo estimate drawn from match scores."""

import math
import random

import chess
import chess.engine
import chess.pgn
import psutil
import pytest

from rewards.chess_engine import EngineError, find_stockfish
from selfplay.domains.chess_arena import MatchResult, estimate_elo, play_match

TINY = chess.engine.Limit(nodes=200)


@pytest.fixture(scope="module")
def weakest_elo() -> int:
    """The lowest UCI_Elo this Stockfish accepts (skips the module's engine tests when there is no Stockfish)."""
    try:
        path = find_stockfish()
    except EngineError as error:
        pytest.skip(str(error))
    with chess.engine.SimpleEngine.popen_uci(path) as engine:
        return engine.options["UCI_Elo"].min


def random_mover(seed: int = 0):
    rng = random.Random(seed)
    return lambda boards: [rng.choice(list(board.legal_moves)).uci() for board in boards]


def read_games(path) -> list[chess.pgn.Game]:
    games = []
    with open(path, encoding="utf-8") as pgn:
        while (game := chess.pgn.read_game(pgn)) is not None:
            games.append(game)
    return games


def stockfish_children() -> set[int]:
    return {child.pid for child in psutil.Process().children(recursive=True) if "stockfish" in child.name()}


def match(wins: int, draws: int, losses: int, elo: float = 1500) -> MatchResult:
    return MatchResult(f"stockfish-elo-{elo}", elo, wins, draws, losses, forfeits=0)


def test_even_score_estimates_the_opponents_elo():
    estimate, low, high = estimate_elo([match(4, 2, 4)])
    assert estimate == pytest.approx(1500, abs=0.01)
    assert low < 1500 < high


def test_more_games_narrow_the_interval():
    _, low_few, high_few = estimate_elo([match(5, 0, 5)])
    _, low_many, high_many = estimate_elo([match(50, 0, 50)])
    assert high_many - low_many < high_few - low_few


def test_scores_against_two_levels_land_between_them():
    estimate, _, _ = estimate_elo([match(7, 0, 3, elo=1400), match(3, 0, 7, elo=1800)])
    assert 1400 < estimate < 1800


def test_all_losses_give_a_finite_upper_bound_only():
    estimate, low, high = estimate_elo([match(0, 0, 10)])
    assert low == -math.inf
    assert math.isfinite(high) and high < 1500
    assert estimate == high


def test_all_wins_give_a_finite_lower_bound_only():
    estimate, low, high = estimate_elo([match(10, 0, 0)])
    assert high == math.inf
    assert math.isfinite(low) and low > 1500
    assert estimate == low


def test_garbage_answers_forfeit_every_game_in_one_batch_per_try(weakest_elo, tmp_path):
    calls = []

    def garbage(boards):
        calls.append(len(boards))
        return ["I resign, sorry"] * len(boards)

    pgn_path = tmp_path / "arena.pgn"
    result = play_match(garbage, opponent_elo=weakest_elo, games=4, engine_limit=TINY, retries=2, pgn_path=pgn_path)
    assert (result.losses, result.forfeits, result.score) == (4, 4, 0.0)
    assert calls == [4, 4, 4]  # one call per try, holding every game
    games = read_games(pgn_path)
    assert len(games) == 4
    assert all(game.headers["Termination"].startswith("forfeit") for game in games)


def test_random_mover_finishes_every_game_with_both_colors(weakest_elo, tmp_path):
    pgn_path = tmp_path / "arena.pgn"
    result = play_match(random_mover(), opponent_elo=weakest_elo, games=4, engine_limit=TINY, max_plies=40,
                        pgn_path=pgn_path)
    assert result.wins + result.draws + result.losses == 4
    assert result.forfeits == 0
    games = read_games(pgn_path)
    assert sorted(game.headers["White"] for game in games) == sorted(["policy", result.opponent] * 2)
    for game in games:
        assert game.headers["Site"] == "selfplay"
        assert game.headers["UCI_Elo"] == str(weakest_elo)
        assert game.headers["Result"] in ("1-0", "0-1", "1/2-1/2")
        assert game.end().board().ply() <= 40
    won = sum(game.headers["Result"] == ("1-0" if game.headers["White"] == "policy" else "0-1") for game in games)
    assert won == result.wins


def test_a_legal_retry_saves_the_game(weakest_elo):
    legal = random_mover()
    calls = 0

    def garbage_then_legal(boards):
        nonlocal calls
        calls += 1
        return ["??"] * len(boards) if calls % 2 else legal(boards)

    result = play_match(garbage_then_legal, opponent_elo=weakest_elo, games=2, engine_limit=TINY, retries=1,
                        max_plies=20)
    assert result.forfeits == 0
    assert calls % 2 == 0 and calls > 2


def test_opponent_elo_outside_the_engine_range_is_refused(weakest_elo):
    with pytest.raises(ValueError, match="UCI_Elo range"):
        play_match(random_mover(), opponent_elo=weakest_elo - 1, games=2, engine_limit=TINY)


def test_no_stockfish_outlives_a_match(weakest_elo):
    before = stockfish_children()
    play_match(random_mover(), opponent_elo=weakest_elo, games=2, engine_limit=TINY, max_plies=10)
    with pytest.raises(ValueError):
        play_match(random_mover(), opponent_elo=weakest_elo - 1, games=2, engine_limit=TINY)
    assert stockfish_children() <= before
