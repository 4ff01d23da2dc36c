"""Position files: EPD, FEN lists, Lichess puzzle CSV and PGN parsed with python-chess; bad input; the mix spec."""

import logging

import chess
import pytest

from selfplay.domains.chess_positions import PositionFileError, parse_position_mix, read_positions

SCHOLAR = "r1bqkb1r/pppp1ppp/2n2n2/4p2Q/2B1P3/8/PPPP1PPP/RNB1K1NR w KQkq -"  # Qh5xf7 mates
FOOLS_MATE = "rnb1kbnr/pppp1ppp/8/4p3/6Pq/5P2/PPPPP2P/RNBQKBNR w KQkq - 1 3"  # white is mated
STALEMATE = "7k/5Q2/6K1/8/8/8/8/8 b - - 0 1"
GARBAGE = ["\x00\xff\x1b[2J", "♔♕♖ ünïcødé ☃", "x" * 100_000, "8/8/8/8/8/8/8/8 w - - 0 1"]  # the last has no kings
PUZZLE_HEADER = "PuzzleId,FEN,Moves,Rating,RatingDeviation,Popularity,NbPlays,Themes,GameUrl,OpeningTags"
PUZZLE = (
    "00sHx,q3k1nr/1pp1nQpp/3p4/1P2p3/4P3/B1PP1b2/B5PP/5K2 b k - 0 17,e8d7 a2e6 d7d8 f7f8,1760,80,83,72,"
    "mate mateIn2 middlegame short,https://lichess.org/yyznGmXs/black#34,Italian_Game Italian_Game_Classical_Variation"
)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_epd_operations_become_uci_moves_and_ids(tmp_path):
    text = f'# a comment\n\n{SCHOLAR} bm Qxf7#; am Nc3; id "scholar";\n{chess.STARTING_BOARD_FEN} w KQkq -\n'
    path = write(tmp_path, "file.epd", text)
    positions, skipped = read_positions(path)
    assert skipped == 0
    assert [(p.best_moves, p.avoid_moves, p.id) for p in positions] == [
        (("h5f7",), ("b1c3",), "scholar"),
        ((), (), "file.epd:4"),
    ]
    assert positions[1].fen == chess.STARTING_FEN


def test_lichess_puzzle_plays_the_opponents_move_first(tmp_path):
    (position,), _ = read_positions(write(tmp_path, "puzzles.csv", f"{PUZZLE_HEADER}\n{PUZZLE}\n"))
    board = chess.Board(position.fen)
    assert board.turn == chess.WHITE  # the CSV FEN has black to move; e8d7 was played for the opponent
    assert board.piece_at(chess.D7) == chess.Piece(chess.KING, chess.BLACK)
    assert position.best_moves == ("a2e6",)
    assert board.is_legal(chess.Move.from_uci(position.best_moves[0]))
    assert (position.id, position.rating) == ("00sHx", 1760)


@pytest.mark.parametrize("moves", ["e8e1 a2e6", "e8d7", "e8d7 a2a1", "0000 a2e6"])
def test_puzzle_with_unusable_moves_is_a_bad_line(tmp_path, moves):
    path = write(tmp_path, "puzzles.csv", PUZZLE.replace("e8d7 a2e6 d7d8 f7f8", moves) + "\n")
    with pytest.raises(PositionFileError, match=r"puzzles\.csv:1: "):
        read_positions(path)


def test_pgn_positions_from_every_game_deduplicated_without_game_over(tmp_path):
    pgn = '[Event "fool"]\n[Result "0-1"]\n\n1. f3 e5 2. g4 Qh4# 0-1\n\n1. e4 e5 *\n'
    positions, _ = read_positions(write(tmp_path, "games.pgn", pgn))
    assert [p.id for p in positions] == ["1:0", "1:1", "1:2", "1:3", "2:1"]  # game 2 starts with a repeat
    assert positions[0].fen == chess.STARTING_FEN
    assert not any(chess.Board(p.fen).is_game_over() for p in positions)
    assert all(p.best_moves == () for p in positions)


def test_pgn_game_with_an_illegal_move_is_reported_at_its_first_line(tmp_path):
    pgn = '[Event "a"]\n\n1. e4 e5 *\n\n[Event "b"]\n[Result "*"]\n\n1. e4 e4 *\n'
    path = write(tmp_path, "games.pgn", pgn)
    with pytest.raises(PositionFileError, match=r"games\.pgn:5: game 2: illegal san"):
        read_positions(path)
    assert read_positions(path, skip_bad=True)[1] == 1


def test_fen_list_drops_finished_games_and_repeats(tmp_path):
    text = f"{FOOLS_MATE}\n{STALEMATE}\n{chess.STARTING_FEN}\n{chess.STARTING_FEN.replace(' 0 1', ' 4 9')}\n"
    positions, _ = read_positions(write(tmp_path, "list.fen", text))
    assert [p.fen for p in positions] == [chess.STARTING_FEN]


def test_malformed_line_names_file_and_line(tmp_path):
    path = write(tmp_path, "file.epd", f"{SCHOLAR}\n\n{SCHOLAR} bm Ke3;\n")  # a king never moves two squares
    with pytest.raises(PositionFileError, match=r"file\.epd:3: ") as info:
        read_positions(path)
    assert str(info.value).startswith(f"{path}:3: ")


def test_skip_bad_counts_bad_lines_and_logs_once(tmp_path, caplog):
    path = write(tmp_path, "list.txt", f"nonsense\n{chess.STARTING_FEN}\n8/8/8/8/8/8/8/8 w - - 0 1\n{SCHOLAR}\n")
    with caplog.at_level(logging.WARNING, logger="selfplay.domains.chess_positions"):
        positions, skipped = read_positions(path, skip_bad=True)
    assert (len(positions), skipped) == (2, 2)
    assert len(caplog.records) == 1 and "skipped 2" in caplog.text and "list.txt:1" in caplog.text


@pytest.mark.parametrize("suffix", [".epd", ".fen", ".csv", ".pgn"])
@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbage_gives_a_short_error_without_a_chained_traceback(tmp_path, suffix, garbage):
    path = write(tmp_path, "bad" + suffix, garbage + "\n")
    with pytest.raises(PositionFileError) as info:
        read_positions(path)
    message = str(info.value)
    assert message.startswith(f"{path}:") and len(message) < 500
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)


@pytest.mark.parametrize(
    "name,text", [("empty.epd", ""), ("comments.fen", "# nothing\n\n"), ("header.csv", PUZZLE_HEADER)]
)
def test_file_without_positions_is_an_error(tmp_path, name, text):
    with pytest.raises(PositionFileError, match=rf"{name}:0: no positions"):
        read_positions(write(tmp_path, name, text))


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(PositionFileError, match=r"\.json.*\.epd, \.fen, \.txt, \.csv, \.pgn"):
        read_positions(write(tmp_path, "positions.json", "{}"))
    with pytest.raises(FileNotFoundError):
        read_positions(tmp_path / "missing.epd")


@pytest.mark.parametrize(
    "spec,mix",
    [
        ("random", [("random", 1.0)]),
        ("puzzles.csv", [("puzzles.csv", 1.0)]),
        ("a.epd:3, random:1,selfplay:0.5", [("a.epd", 3.0), ("random", 1.0), ("selfplay", 0.5)]),
        ("runs/x:y.epd:2", [("runs/x:y.epd", 2.0)]),
    ],
)
def test_position_mix_parses_sources_and_weights(spec, mix):
    assert parse_position_mix(spec) == mix


@pytest.mark.parametrize(
    "spec,problem",
    [("", "empty source"), ("a.epd,,random", "empty source"), (":2", "empty source"), ("random:0", "> 0"),
     ("random:-1", "> 0"), ("random:abc", "> 0"), ("a.epd:", "> 0"), ("random,random:2", "listed twice")],
)
def test_position_mix_rejects_malformed_specs(spec, problem):
    with pytest.raises(ValueError, match=problem):
        parse_position_mix(spec)
