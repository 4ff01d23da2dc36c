"""Write bench/data/heldout.epd: held-out test positions with Stockfish's best move as `bm`.

    python bench/make_heldout_epd.py [--count 100] [--depth 14]

The positions are random playouts from a seed that neither the training positions (small seeds) nor the loop's
built-in held-out set (seed 1_000_003) use; `bm` is Stockfish's best move at `--depth`, deeper than the depth-8
reward. `selfplay eval chess --positions-file bench/data/heldout.epd` then reports the solve rate (bm match).
"""

import argparse
from pathlib import Path

import chess

from rewards.chess_engine import EnginePool, parse_limit
from selfplay.domains.chess import random_positions

SEED = 2_000_003


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--depth", type=int, default=14)
    args = parser.parse_args()
    boards = [chess.Board(fen) for fen in random_positions(args.count, seed=SEED)]
    with EnginePool(limit=parse_limit(f"depth={args.depth}")) as pool:
        best = pool.best_moves(boards)
    lines = [board.epd(bm=[chess.Move.from_uci(move)], id=f"heldout-{i}") for i, (board, move) in enumerate(zip(boards, best))]
    out = Path("bench/data/heldout.epd")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"{out}: {len(lines)} positions")


if __name__ == "__main__":
    main()
