"""Write the held-out position sets under bench/data/, each position with its solution as `bm`.

    python bench/make_heldout_epd.py [--count 100] [--depth 14]

- heldout.epd: random playouts from a seed that neither the training positions (small seeds) nor the loop's
  built-in held-out set (seed 1_000_003) use; `bm` is Stockfish's best move at `--depth`;
- mate_in_one.epd: capture-biased random playouts with a mate in one; `bm` is every mating move (python-chess);
- winning_move.epd: positions whose best move, at `--tactics-depth`, keeps at least 0.3 more expected score than
  every other move (a piece to win, a fork, a mate in a few): `bm` is that move.

    selfplay loop --eval-file random,bench/data/mate_in_one.epd,bench/data/winning_move.epd
"""

import argparse
import time
from pathlib import Path

import chess

from rewards.chess_engine import EnginePool, parse_limit
from selfplay.domains.chess import random_positions
from selfplay.domains.chess_tactics import mate_in_one_positions, to_epd, winning_move_positions

SEED = 2_000_003
MATE_SEED = 3_000_003
WINNING_SEED = 4_000_003


def write(path: Path, lines: list[str], started: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"{path}: {len(lines)} positions ({time.perf_counter() - started:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--depth", type=int, default=14, help="search depth of heldout.epd's bm")
    parser.add_argument("--tactics-depth", type=int, default=10, help="search depth of winning_move.epd")
    parser.add_argument("--out", default="bench/data")
    args = parser.parse_args()
    out, started = Path(args.out), time.perf_counter()

    boards = [chess.Board(fen) for fen in random_positions(args.count, seed=SEED)]
    with EnginePool(limit=parse_limit(f"depth={args.depth}")) as pool:
        best = pool.best_moves(boards)
    write(out / "heldout.epd", [board.epd(bm=[chess.Move.from_uci(move)], id=f"heldout-{i}")
                                for i, (board, move) in enumerate(zip(boards, best))], started)

    write(out / "mate_in_one.epd", [to_epd(p) for p in mate_in_one_positions(args.count, seed=MATE_SEED)], started)

    with EnginePool(limit=parse_limit(f"depth={args.tactics_depth}")) as pool:
        winning = winning_move_positions(args.count, seed=WINNING_SEED, pool=pool)
    write(out / "winning_move.epd", [to_epd(p) for p in winning], started)


if __name__ == "__main__":
    main()
