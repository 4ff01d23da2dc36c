"""Self-play positions: games of the policy (here a stand-in player) become the next training prompts."""

import json
import random
from pathlib import Path

import chess
import pytest

from selfplay.config import make_config
from selfplay.domains.chess_selfplay import SelfPlayPositions, phase


def random_mover(seed: int = 0, garbage_every: int = 0):
    """A stand-in for the policy: a random legal move in UCI; every `garbage_every`-th answer is garbage instead."""
    rng, calls = random.Random(seed), [0]

    def choose_moves(boards):
        answers = []
        for board in boards:
            calls[0] += 1
            garbage = garbage_every and calls[0] % garbage_every == 0
            answers.append("hmm" if garbage else rng.choice(list(board.legal_moves)).uci())
        return answers

    return choose_moves


def test_a_round_gives_distinct_unfinished_positions_from_several_phases():
    pool = SelfPlayPositions(random_mover(), games=4, max_plies=120, opponent_elo=None, seed=0)
    pool.refresh()
    fens = [p.fen for p in pool.positions]
    assert len(fens) == len(set(fens)) > 10
    boards = [chess.Board(fen) for fen in fens]
    assert not any(b.is_game_over() for b in boards)
    assert {phase(b) for b in boards} >= {"opening", "middlegame"}


def test_illegal_answers_are_counted_and_the_games_go_on():
    pool = SelfPlayPositions(random_mover(garbage_every=2), games=2, max_plies=30, opponent_elo=None, seed=0)
    pool.refresh()
    assert pool.stats["selfplay/illegal_rate"] == pytest.approx(0.5, abs=0.05)
    assert pool.positions


def test_held_out_positions_never_enter_the_pool():
    first = SelfPlayPositions(random_mover(), games=2, max_plies=20, opponent_elo=None, seed=0)
    first.refresh()
    held_out = {p.fen for p in first.positions}
    again = SelfPlayPositions(random_mover(), games=2, max_plies=20, opponent_elo=None, seed=0, exclude=held_out)
    again.refresh()
    assert not held_out & {p.fen for p in again.positions}


def test_games_against_limited_stockfish_alternate_colors():
    pool = SelfPlayPositions(random_mover(), games=2, max_plies=16, opponent_elo=1500, seed=0,
                             engine_limit=chess.engine.Limit(nodes=100))
    pool.refresh()
    sides = {chess.Board(p.fen).turn for p in pool.positions}
    assert sides == {chess.WHITE, chess.BLACK}  # the policy played both colors (and positions after either move)


@pytest.mark.slow
def test_loop_trains_on_positions_from_its_own_games(tiny_model, tmp_path):
    from dense_domain import DENSE

    from selfplay import loop

    config = make_config(
        domain=DENSE, model=tiny_model, runs_dir=str(tmp_path), run="selfplay", positions="selfplay", warm_start=0, steps=2,
        prompts_per_step=2,
        num_generations=2, micro_batch_size=2, train_positions=4, eval_positions=0, engine_limit="depth=2",
        selfplay_games=2, selfplay_plies=8,
    )
    loop.run_loop(config)
    metrics = [json.loads(line) for line in (Path(tmp_path) / "selfplay" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(m["selfplay/positions"] > 0 for m in metrics)
    samples = [json.loads(line) for line in (Path(tmp_path) / "selfplay" / "samples.jsonl").read_text().splitlines()]
    plies = [chess.Board(s["fen"]).ply() for s in samples]
    assert all(ply <= 8 for ply in plies)  # every prompt is a position of a self-play game of at most 8 plies
