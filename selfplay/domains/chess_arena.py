"""Matches of a chess policy against Stockfish at fixed strengths, and the Elo rating they imply.

    result = play_match(choose_moves, opponent_elo=1350, games=20, engine_limit=chess.engine.Limit(time=0.05),
                        pgn_path=Path("runs/arena.pgn"))
    elo, low, high = estimate_elo([result, ...])   # maximum-likelihood Elo with a 95% interval

The policy is a batched callable `choose_moves(boards) -> answers`: the raw answer text per board. All games of a
match run side by side, so every ply the policy gets one call holding every unfinished game. An answer is read with
`rewards.chess.parse_move`; unparsable or illegal answers are asked for again (only those boards) `retries` times,
then the game is lost by forfeit. The opponent is one Stockfish process with `UCI_LimitStrength`; each game starts
from a short seeded random opening so the games differ, and the policy alternates White and Black. A game ends by
the rules (`board.outcome(claim_draw=True)`) or is adjudicated a draw at `max_plies`.
"""

import datetime
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import chess
import chess.engine
import chess.pgn

from rewards.chess import parse_move
from rewards.chess_engine import find_stockfish

log = logging.getLogger(__name__)

ChooseMoves = Callable[[list[chess.Board]], list[str]]
POLICY = "policy"  # the policy's name in PGN headers
SEARCH_SPAN = 8000.0  # Elo beyond the outermost opponents where the rating search stops (a bound there is infinite)


@dataclass
class MatchResult:
    """The policy's results in one match; `losses` includes the `forfeits` (games lost by illegal answers)."""

    opponent: str
    opponent_elo: float
    wins: int
    draws: int
    losses: int
    forfeits: int

    @property
    def games(self) -> int:
        return self.wins + self.draws + self.losses

    @property
    def points(self) -> float:
        return self.wins + self.draws / 2

    @property
    def score(self) -> float:
        """Points per game, draws counting half."""
        return self.points / self.games


@dataclass
class _Game:
    board: chess.Board
    policy_color: chess.Color
    opening: str  # how the game was opened, for the PGN
    result: str | None = None  # "1-0", "0-1", "1/2-1/2" once over
    termination: str = ""
    last_answer: str | None = None  # the policy's last refused answer, shown in the PGN of a forfeit


def play_match(
    choose_moves: ChooseMoves,
    *,
    opponent_elo: int,
    games: int,
    engine_limit: chess.engine.Limit,
    seed: int = 0,
    retries: int = 3,
    max_plies: int = 200,
    pgn_path: Path | None = None,
    engine_path: str | None = None,
) -> MatchResult:
    """Play `games` games against Stockfish at `opponent_elo` (ValueError outside the engine's UCI_Elo range)."""
    if games < 1:
        raise ValueError(f"games={games}: a match needs at least one game")
    match = [_open_game(seed + i, chess.WHITE if i % 2 == 0 else chess.BLACK, max_plies) for i in range(games)]
    engine = chess.engine.SimpleEngine.popen_uci(engine_path or find_stockfish())
    try:
        check_opponent_elo(opponent_elo, engine)
        engine.configure({"UCI_LimitStrength": True, "UCI_Elo": opponent_elo})
        while live := [game for game in match if game.result is None]:
            # the engine moves first, so that afterwards the policy is to move in every unfinished game
            for game in live:
                if game.board.turn != game.policy_color:
                    game.board.push(engine.play(game.board, engine_limit).move)
                    _end_if_over(game, max_plies)
            _play_policy_moves(choose_moves, [game for game in live if game.result is None], retries, max_plies)
    finally:
        try:
            engine.quit()  # waits for the process to exit
        except (chess.engine.EngineError, chess.engine.EngineTerminatedError, TimeoutError):
            engine.close()  # dead or hung: dropping the transport kills it
    opponent = f"stockfish-elo-{opponent_elo}"
    if pgn_path is not None:
        with open(pgn_path, "a", encoding="utf-8") as pgn:
            for index, game in enumerate(match):
                print(_to_pgn(game, index, opponent, opponent_elo), file=pgn, end="\n\n")
    wins = sum(game.result == ("1-0" if game.policy_color == chess.WHITE else "0-1") for game in match)
    draws = sum(game.result == "1/2-1/2" for game in match)
    forfeits = sum(game.termination.startswith("forfeit") for game in match)
    result = MatchResult(opponent, opponent_elo, wins, draws, games - wins - draws, forfeits)
    log.debug("%s: +%d =%d -%d (%d forfeits), score %.3f", opponent, wins, draws, result.losses, forfeits, result.score)
    return result


def check_opponent_elo(elo: int, engine: chess.engine.SimpleEngine | None = None) -> None:
    """ValueError naming the range when this Stockfish cannot play at UCI_Elo `elo` (asks `engine`, or a new one)."""
    own = engine is None
    engine = engine or chess.engine.SimpleEngine.popen_uci(find_stockfish())
    try:
        option = engine.options["UCI_Elo"]
    finally:
        if own:
            engine.quit()
    if not option.min <= elo <= option.max:
        raise ValueError(f"UCI_Elo {elo} is outside this Stockfish's UCI_Elo range [{option.min}, {option.max}]")


def _open_game(seed: int, policy_color: chess.Color, max_plies: int) -> _Game:
    rng = random.Random(seed)
    board = chess.Board()
    plies = rng.randint(2, 4)
    for _ in range(plies):
        board.push(rng.choice(list(board.legal_moves)))
    game = _Game(board, policy_color, opening=f"random, {plies} plies, seed {seed}")
    _end_if_over(game, max_plies)
    return game


def _play_policy_moves(choose_moves: ChooseMoves, games: list[_Game], retries: int, max_plies: int) -> None:
    pending = games
    for _ in range(1 + retries):
        if not pending:
            return
        answers = choose_moves([game.board.copy() for game in pending])
        if len(answers) != len(pending):
            raise ValueError(f"choose_moves answered {len(answers)} times for {len(pending)} boards")
        refused = []
        for game, answer in zip(pending, answers):
            move = parse_move(game.board, answer)
            if move is None:
                game.last_answer = answer
                refused.append(game)
            else:
                game.board.push(move)
                _end_if_over(game, max_plies)
        pending = refused
    for game in pending:
        game.result = "0-1" if game.policy_color == chess.WHITE else "1-0"
        game.termination = f"forfeit: no legal move in {1 + retries} answers"


def _end_if_over(game: _Game, max_plies: int) -> None:
    outcome = game.board.outcome(claim_draw=True)
    if outcome is not None:
        game.result, game.termination = outcome.result(), outcome.termination.name.lower().replace("_", " ")
    elif game.board.ply() >= max_plies:
        game.result, game.termination = "1/2-1/2", f"adjudicated: draw at {max_plies} plies"


def _to_pgn(game: _Game, index: int, opponent: str, opponent_elo: int) -> chess.pgn.Game:
    pgn = chess.pgn.Game.from_board(game.board)
    white, black = (POLICY, opponent) if game.policy_color == chess.WHITE else (opponent, POLICY)
    pgn.headers.update(
        Event=f"selfplay arena: {POLICY} vs {opponent}", Site="selfplay",
        Date=datetime.date.today().strftime("%Y.%m.%d"), Round=str(index + 1), White=white, Black=black,
        Result=game.result, Termination=game.termination, UCI_Elo=str(opponent_elo), Opening=game.opening,
    )
    if game.termination.startswith("forfeit"):
        pgn.end().comment = f"{POLICY} forfeits; its last answer: {game.last_answer[:200]!r}"
    return pgn


def estimate_elo(results: list[MatchResult], *, confidence: float = 0.95) -> tuple[float, float, float]:
    """(estimate, low, high): the maximum-likelihood Elo of the player given its scores against opponents of known Elo
    (logistic model E = 1/(1+10^((Ro-R)/400)), draws as half points), with a likelihood-ratio confidence interval
    {R : 2 (logL(best) - logL(R)) <= chi2_1(confidence)}.

    Counting a draw as half a win and half a loss overstates the variance of a game, so the interval is conservative.
    With no points at all the likelihood keeps rising as R falls (no finite maximum): the estimate is then the upper
    bound ("at most this strong") and low = -inf; with every point, the estimate is the lower bound and high = +inf.
    A bound further than SEARCH_SPAN Elo beyond the outermost opponent is reported as infinite.
    """
    games = sum(result.games for result in results)
    if games == 0:
        raise ValueError("estimate_elo needs at least one game")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence}: must lie strictly between 0 and 1")
    points = sum(result.points for result in results)
    edge_low = min(result.opponent_elo for result in results) - SEARCH_SPAN
    edge_high = max(result.opponent_elo for result in results) + SEARCH_SPAN

    def expected_points(rating: float) -> float:
        # E = sigmoid(t), written with tanh so that no |t| overflows
        return sum(result.games * (1 + math.tanh(_log_odds(rating, result.opponent_elo) / 2)) / 2 for result in results)

    def log_likelihood(rating: float) -> float:
        total = 0.0
        for result in results:
            t = _log_odds(rating, result.opponent_elo)
            total -= result.points * _softplus(-t) + (result.games - result.points) * _softplus(t)  # log E, log 1-E
        return total

    # the likelihood is concave; it peaks where the expected points equal the points scored (an edge if never)
    best = _root(lambda rating: expected_points(rating) - points, edge_low, edge_high)
    floor = log_likelihood(best) - NormalDist().inv_cdf((1 + confidence) / 2) ** 2 / 2

    def inside(rating: float) -> float:  # > 0 inside the interval
        return log_likelihood(rating) - floor

    low = -math.inf if inside(edge_low) > 0 else _root(inside, edge_low, best)
    high = math.inf if inside(edge_high) > 0 else _root(lambda rating: -inside(rating), best, edge_high)
    if points == 0:
        return high, low, high
    if points == games:
        return low, low, high
    return best, low, high


def _log_odds(rating: float, opponent_elo: float) -> float:
    """Natural-log odds of the player scoring against the opponent: E = sigmoid(this)."""
    return math.log(10) / 400 * (rating - opponent_elo)


def _softplus(t: float) -> float:
    """log(1 + e^t), without overflow: -log sigmoid(-t)."""
    return max(t, 0.0) + math.log1p(math.exp(-abs(t)))


def _root(increasing: Callable[[float], float], low: float, high: float) -> float:
    """Where an increasing function crosses zero in [low, high], by bisection (an end if it does not cross)."""
    for _ in range(100):
        middle = (low + high) / 2
        if increasing(middle) < 0:
            low = middle
        else:
            high = middle
    return (low + high) / 2
