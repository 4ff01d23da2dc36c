"""Self-play positions: the current policy plays games, and the positions it reaches become the next training prompts.

    pool = SelfPlayPositions(player, games=4, max_plies=60, opponent_elo=None, seed=0)
    pool.refresh()          # plays a round of games with the policy vLLM serves now -> pool.positions
    dataset, callback = live_dataset(static_rows, pool, share=0.5, seed=0)   # for TRL: rows drawn as training asks

The policy plays against itself (`opponent_elo=None`) or against Stockfish limited to `opponent_elo`
(`UCI_LimitStrength`). Its answers are sampled; an illegal answer is replaced by a random legal move so the game goes
on (the share is reported as `selfplay/illegal_rate`). The positions of a round are deduplicated, held-out positions
removed, and sampled evenly across game phases (opening, middlegame, endgame). `RefreshEachIteration` plays a new
round after every update, so the prompts follow the policy: TRL's data loader reads one generation batch ahead,
so iteration k trains on positions from games of policy version k-2 or later.
"""

import logging
import random
import weakref

import chess
import chess.engine
from datasets import IterableDataset
from transformers import TrainerCallback

from rewards.chess import parse_move
from rewards.chess_engine import find_stockfish
from selfplay.domains.chess_positions import Position

log = logging.getLogger(__name__)


class PolicyPlayer:
    """Moves from the policy vLLM serves: one batched request per call, the chess prompt of each board.

    The first answer for a board is sampled at `temperature` (0: greedy); a board asked again (after an illegal
    answer) is sampled at `retry_temperature`, so a retry can differ.
    """

    def __init__(self, policy, tokenizer, *, max_tokens: int, temperature: float, retry_temperature: float = 1.0,
                 style: str):
        from selfplay.domains.chess import ONE_MOVE, answers_in_san, position_prompt
        from selfplay.train import encode_prompt

        self.policy, self.max_tokens, self.asked = policy, max_tokens, {}
        self.temperature, self.retry_temperature = temperature, retry_temperature
        self.stop = ONE_MOVE if answers_in_san(style) else None  # as the loop's chess samples
        self.encode = lambda board: encode_prompt(tokenizer, position_prompt(board.fen(), style))

    def __call__(self, boards: list[chess.Board]) -> list[str]:
        retry = [self.asked.get(board.fen(), 0) > 0 for board in boards]
        for board in boards:
            self.asked[board.fen()] = self.asked.get(board.fen(), 0) + 1
        answers = [""] * len(boards)
        for again in (False, True):
            index = [i for i, r in enumerate(retry) if r == again]
            if index:
                groups = self.policy.generate([self.encode(boards[i]) for i in index], n=1, max_tokens=self.max_tokens,
                                              temperature=self.retry_temperature if again else self.temperature,
                                              stop=self.stop)
                for i, group in zip(index, groups):
                    answers[i] = group[0].text
        return answers


def phase(board: chess.Board) -> str:
    pieces = len(board.piece_map())
    if board.ply() < 16 and pieces > 28:
        return "opening"
    return "endgame" if pieces <= 12 else "middlegame"


_LIVE_POOLS: "weakref.WeakValueDictionary[int, SelfPlayPositions]" = weakref.WeakValueDictionary()


def _live_pool(key: int) -> "SelfPlayPositions":
    return _LIVE_POOLS[key]


class SelfPlayPositions:
    def __init__(self, choose_moves, *, games: int, max_plies: int, opponent_elo: int | None, seed: int,
                 engine_limit: chess.engine.Limit | None = None, exclude: set[str] = frozenset()):
        _LIVE_POOLS[id(self)] = self
        self.choose_moves, self.games, self.max_plies = choose_moves, games, max_plies
        self.opponent_elo, self.engine_limit = opponent_elo, engine_limit or chess.engine.Limit(time=0.02)
        self.rng, self.exclude = random.Random(seed), set(exclude)
        self.positions: list[Position] = []
        self.stats: dict = {}

    def __reduce__(self):
        # datasets fingerprints a stream's generator arguments by pickling them; the pool holds a live vLLM engine:
        # it pickles as a reference to itself (valid in this process, which is where the stream is read)
        return _live_pool, (id(self),)

    def refresh(self) -> None:
        """Play one round of games with the current policy; its positions replace the pool."""
        boards = [chess.Board() for _ in range(self.games)]
        policy_color = [chess.WHITE if i % 2 == 0 else chess.BLACK for i in range(self.games)]
        reached: dict[str, chess.Board] = {}
        asked = illegal = 0
        engine = self._opponent()
        try:
            while live := [i for i, b in enumerate(boards) if not b.is_game_over() and b.ply() < self.max_plies]:
                policy_turn = [i for i in live if engine is None or boards[i].turn == policy_color[i]]
                for i in live:
                    reached.setdefault(boards[i].fen(), boards[i].copy(stack=False))
                answers = self.choose_moves([boards[i] for i in policy_turn]) if policy_turn else []
                for i, answer in zip(policy_turn, answers):
                    move = parse_move(boards[i], answer)
                    asked, illegal = asked + 1, illegal + (move is None)
                    boards[i].push(move or self.rng.choice(list(boards[i].legal_moves)))
                for i in live:
                    if i not in policy_turn and not boards[i].is_game_over():
                        boards[i].push(engine.play(boards[i], self.engine_limit).move)
        finally:
            if engine is not None:
                engine.quit()
        self.positions = self._sample_phases([b for fen, b in reached.items() if fen not in self.exclude])
        self.stats = {"selfplay/positions": len(self.positions), "selfplay/illegal_rate": illegal / max(asked, 1)}
        log.info("self-play round: %d games, %d positions, illegal rate %.2f", self.games, len(self.positions),
                 self.stats["selfplay/illegal_rate"])

    def _opponent(self) -> chess.engine.SimpleEngine | None:
        if self.opponent_elo is None:
            return None
        engine = chess.engine.SimpleEngine.popen_uci(find_stockfish())
        engine.configure({"UCI_LimitStrength": True, "UCI_Elo": self.opponent_elo})
        return engine

    def _sample_phases(self, boards: list[chess.Board]) -> list[Position]:
        """As many positions from each game phase as the rarest phase that occurred has (all phases even)."""
        by_phase: dict[str, list[chess.Board]] = {}
        for board in boards:
            by_phase.setdefault(phase(board), []).append(board)
        per_phase = min(len(group) for group in by_phase.values()) if by_phase else 0
        per_phase = max(per_phase, len(boards) // (2 * max(len(by_phase), 1)))  # a rare phase must not starve the rest
        chosen = [b for group in by_phase.values() for b in self.rng.sample(group, min(per_phase, len(group)))]
        return [Position(board.fen(), id="selfplay") for board in chosen]


def live_dataset(static_rows: list[dict], pool: SelfPlayPositions, *, share: float, seed: int, to_row) -> IterableDataset:
    """An endless stream of training rows: a self-play position with probability `share`, else a static row."""

    def rows(pool, static_rows, share, seed):
        rng = random.Random(seed)
        while True:
            if pool.positions and (not static_rows or rng.random() < share):
                yield to_row(rng.choice(pool.positions))
            else:
                yield rng.choice(static_rows)

    # datasets splits list-valued gen_kwargs into shards: one shard, whose generator gets the inner list
    return IterableDataset.from_generator(rows, gen_kwargs={"pool": pool, "static_rows": [static_rows], "share": share,
                                                            "seed": seed})


class RefreshEachIteration(TrainerCallback):
    """After every update (once the new adapter is served), play a new self-play round for the next prompts."""

    def __init__(self, pool: SelfPlayPositions, stats: dict):
        self.pool, self.stats = pool, stats
        stats.update(pool.stats)

    def on_step_end(self, args, state, control, **kwargs):
        self.pool.refresh()
        self.stats.update(self.pool.stats)
