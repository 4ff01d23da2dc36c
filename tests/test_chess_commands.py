"""`selfplay sft` and `selfplay eval chess` end to end on the tiny model: real TRL, vLLM and Stockfish."""

import json
import re

import chess.pgn
import pytest
import torch

from selfplay.cli import main


@pytest.mark.slow
def test_sft_on_engine_moves_writes_a_model_the_loop_can_load(tiny_model, tmp_path, capfd):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    status = main(["sft", "--model", tiny_model, "--examples", "8", "--batch-size", "4", "--epochs", "3", "--learning-rate", "0.01",
                   "--engine-limit", "depth=4", "--runs-dir", str(tmp_path), "--run", "warm"])
    assert status == 0
    result = json.loads((tmp_path / "warm" / "sft.json").read_text())
    assert result["examples"] == 8 and result["last_loss"] < result["first_loss"]
    out = capfd.readouterr().out  # through a pipe: the fine-tune's progress, a line per tenth of its steps
    assert re.search(r"^sft step 6/6  loss \d+\.\d{3}  \d+\.\d min$", out, re.MULTILINE), out
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "warm" / "model")
    base = load_file(f"{tiny_model}/model.safetensors")
    assert not torch.equal(model.state_dict()["model.layers.0.mlp.down_proj.weight"],
                           base["model.layers.0.mlp.down_proj.weight"])  # the LoRA update was merged in


@pytest.mark.slow
def test_eval_scores_a_position_file_and_plays_rated_games(tiny_model, tmp_path):
    epd = tmp_path / "test.epd"
    epd.write_text(
        'r1bqkb1r/pppp1ppp/2n2n2/4p2Q/2B1P3/8/PPPP1PPP/RNB1K1NR w KQkq - bm Qxf7#; id "scholar";\n'
        'rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - id "start";\n'
    )
    status = main(["eval", "chess", "--model", tiny_model, "--file", str(epd), "--games", "2",
                   "--elo", "1350", "--opponent-limit", "nodes=100", "--retries", "1", "--runs-dir", str(tmp_path),
                   "--out", "ev"])
    assert status == 0
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())
    positions = result["result"]
    assert positions["n"] == 2 and 0.0 <= positions["legal_move_reward"] <= 1.0
    assert positions["solve_reward"] in (0.0, 1.0)  # only the scholar's-mate row has a bm
    [match] = result["matches"]
    assert match["wins"] + match["draws"] + match["losses"] == 2
    with open(tmp_path / "ev" / "games.pgn") as pgn:
        games = [chess.pgn.read_game(pgn), chess.pgn.read_game(pgn)]
    assert {g.headers["White"] for g in games} == {"policy", "stockfish-elo-1350"}
    assert result["elo"]["estimate"] is not None
