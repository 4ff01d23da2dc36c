"""Engine rewards per second on a GRPO-shaped batch: the engine pool (parallel, deduplicated, cached) vs a naive loop.

    python bench/engine_reward.py [--prompts 64] [--group 8] [--limit depth=8] [--workers 0]

The batch imitates one GRPO iteration: `prompts` random positions, `group` answers each. A group's answers repeat
moves as a policy's samples do (in the default loop's samples, a group of 8 held 8 distinct answers at the first
iteration and 1-3 from the tenth): each group draws its answers from k candidate moves, k uniform in 1..group,
and one answer in ten is illegal (scores 0 without a search). Both sides compute the same reward, the move's
expected score relative to the engine's best, under the same limit, in this one run:

- naive: one Stockfish, `engine.analyse` twice per answer (the position, then the played move as the only root
  move), no cache; each search from a cleared hash table, as in the pool, so that both compute identical rewards
  (checked: `share_of_equal_rewards`);
- pool: `rewards.chess_engine.EnginePool` (one engine per core), cold cache at the start of the batch.

Both sides' engines are started before the clock starts, as in the loop, whose pool lives through the run and scores
every batch warm (`ratio`); `ratio_counting_starts` adds each side's engine start (Stockfish loads its network: ~0.2 s
an engine, paid once a run).

Results go to bench/results/engine_reward.json.
"""

import argparse
import json
import random
import time
from pathlib import Path

import chess
import chess.engine

from rewards.chess_engine import EnginePool, find_stockfish, parse_limit
from selfplay.domains.chess import random_positions


def grpo_batch(prompts: int, group: int, seed: int = 0) -> list[tuple[chess.Board, chess.Move | None]]:
    rng = random.Random(seed)
    batch = []
    for fen in random_positions(prompts, seed=seed):
        board = chess.Board(fen)
        legal = list(board.legal_moves)
        candidates = rng.sample(legal, min(len(legal), rng.randint(1, group)))
        for _ in range(group):
            batch.append((board, None if rng.random() < 0.1 else rng.choice(candidates)))
    return batch


def naive_rewards(batch, limit: chess.engine.Limit, engine: chess.engine.SimpleEngine) -> list[float]:
    rewards = []
    for board, move in batch:
        if move is None:
            rewards.append(0.0)
            continue
        # each search from a clear hash table, as the pool does, so both sides compute the same numbers
        best = engine.analyse(board, limit, game=object())["score"].pov(board.turn).wdl().expectation()
        played = engine.analyse(board, limit, root_moves=[move], game=object())["score"].pov(board.turn).wdl().expectation()
        rewards.append(1.0 - (max(best, played) - played))
    return rewards


def pool_rewards(batch, pool: EnginePool) -> list[float]:
    scored = [i for i, (_, move) in enumerate(batch) if move is not None]
    scores = dict(zip(scored, pool.score_moves([batch[i] for i in scored])))
    return [scores.get(i, 0.0) for i in range(len(batch))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--limit", default="depth=8")
    parser.add_argument("--workers", type=int, default=0, help="engines in the pool (0: one per core)")
    args = parser.parse_args()
    limit = parse_limit(args.limit)
    batch = grpo_batch(args.prompts, args.group)

    start = time.perf_counter()
    with chess.engine.SimpleEngine.popen_uci(find_stockfish()) as engine:
        engine.ping()
        naive_start = time.perf_counter() - start
        start = time.perf_counter()
        naive = naive_rewards(batch, limit, engine)
        naive_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with EnginePool(size=args.workers or None, limit=limit) as pool:
        list(pool.workers.map(lambda engine: engine.start(), pool.engines))
        pool_start = time.perf_counter() - start
        start = time.perf_counter()
        pooled = pool_rewards(batch, pool)
        pool_seconds = time.perf_counter() - start
        searches = pool.evaluations

    agree = sum(abs(a - b) < 1e-9 for a, b in zip(naive, pooled)) / len(batch)
    result = {
        "batch": len(batch),
        "limit": args.limit,
        "distinct_evaluations": searches,
        "naive_rewards_per_s": len(batch) / naive_seconds,
        "pool_rewards_per_s": len(batch) / pool_seconds,
        "ratio": naive_seconds / pool_seconds,
        "naive_start_s": naive_start,
        "pool_start_s": pool_start,
        "ratio_counting_starts": (naive_start + naive_seconds) / (pool_start + pool_seconds),
        "share_of_equal_rewards": agree,
    }
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/engine_reward.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
