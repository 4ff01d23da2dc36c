"""Bad input to the `selfplay` command: one clear line on stderr and exit status 2, nothing overwritten."""

import pytest

from selfplay.cli import main


def run_cli(capfd, *argv):
    status = main(list(argv))
    return status, capfd.readouterr().err


def test_unknown_domain(capfd, tmp_path):
    status, err = run_cli(capfd, "loop", "--domain", "poker", "--runs-dir", str(tmp_path))
    assert status == 2 and "unknown domain 'poker'" in err and "chess" in err
    assert not any(tmp_path.iterdir())


def test_missing_model_path(capfd, tmp_path):
    status, err = run_cli(capfd, "loop", "--model", str(tmp_path / "nope"), "--runs-dir", str(tmp_path))
    assert status == 2 and "does not exist" in err
    assert list(tmp_path.iterdir()) == []  # no run directory left behind


def test_model_directory_without_config(capfd, tmp_path):
    (tmp_path / "empty").mkdir()
    status, err = run_cli(capfd, "loop", "--model", str(tmp_path / "empty"), "--runs-dir", str(tmp_path))
    assert status == 2 and "no config.json" in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--grpo", "loss_type"], "expected KEY=VALUE"),
        (["--grpo", "no_such_field=1"], "has no field"),
        (["--grpo", "epsilon=abc"], "not a valid float"),
        (["--grpo", "mask_truncated_completions=maybe"], "not a valid bool"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--micro-batch-size", "3"], "must divide"),
        (["--preset", "short"], "--preset 'short': the chess domain's presets are long"),
        (["--domain", "code", "--preset", "long"], "the code domain's presets are none"),
        (["--games", "-1"], "--games must be 0 or more"),
        (["--games", "2", "--elo", "900"], "outside this Stockfish's UCI_Elo range"),
        (["--best-move-bonus", "-1"], "--best-move-bonus must be 0 or more"),
        (["--num-processes", "0"], "--num-processes must be at least 1"),
        (["--vllm-server", "gpu-box:8000"], "give auto or a URL"),
        (["--num-processes", "2", "--accelerate-config", "missing.yaml"], "choose ddp, zero2, fsdp"),
        (["--overlap-rewards", "sometimes"], "choose auto, on or off"),
    ],
)
def test_malformed_flags(capfd, tmp_path, flags, message):
    status, err = run_cli(capfd, "loop", "--runs-dir", str(tmp_path), *flags)
    assert status == 2 and message in err


def test_each_domain_has_its_own_flags(capfd):
    with pytest.raises(SystemExit) as code_games:
        main(["loop", "--domain", "code", "--games", "2"])
    assert code_games.value.code == 2 and "unrecognized arguments: --games" in capfd.readouterr().err
    with pytest.raises(SystemExit):
        main(["loop", "--domain", "code", "--help"])
    help_text = capfd.readouterr().out
    assert "code domain:" in help_text and "--sandbox" in help_text and "--engine-limit" not in help_text


def test_a_preset_replaces_the_defaults_and_the_flags_given_win():
    from selfplay.config import make_config

    plain, long = make_config(), make_config(preset="long")
    assert (plain.warm_start, plain.steps, plain.games) == (1000, 20, 0)
    assert (long.warm_start, long.steps, long.games) == (4000, 40, 20)
    assert long.learning_rate == plain.learning_rate  # what the preset does not name stays the domain's default
    mine = make_config(preset="long", steps=5, warm_start=0)
    assert (mine.warm_start, mine.steps, mine.games) == (0, 5, 20)


@pytest.mark.parametrize("settings, micro_batch", [
    ({}, 16),  # chess: two groups of 8 a pass
    ({"domain": "code"}, 8),
    ({"prompts_per_step": 1}, 8),  # the default shrinks to what divides an iteration's sequences
    ({"prompts_per_step": 3, "num_generations": 4}, 4),
    ({"num_processes": 2}, 16),  # per process: 32 / 2
    ({"micro_batch_size": 2}, 2),  # a size given is kept
])
def test_the_default_micro_batch_is_the_domains_and_divides_an_iteration(settings, micro_batch):
    from selfplay.config import make_config

    config = make_config(**settings)
    assert config.micro_batch_size == micro_batch
    assert (config.prompts_per_step * config.num_generations // config.num_processes) % micro_batch == 0


def test_grpo_passthrough_is_typed_by_trl():
    from selfplay.config import grpo_overrides

    assert grpo_overrides(["epsilon=0.3", "loss_type=grpo", "mask_truncated_completions=true"]) == {
        "epsilon": 0.3,
        "loss_type": "grpo",
        "mask_truncated_completions": True,
    }


def test_existing_run_is_never_overwritten(capfd, tmp_path, default_model):
    run = tmp_path / "taken"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"iteration": 1}\n')
    status, err = run_cli(capfd, "loop", "--runs-dir", str(tmp_path), "--run", "taken")
    assert status == 2 and "already holds a run" in err
    assert (run / "metrics.jsonl").read_text() == '{"iteration": 1}\n'


def test_malformed_position_file_names_file_and_line_and_starts_nothing(capfd, tmp_path):
    bad = tmp_path / "bad.fen"
    bad.write_text(chess_start() + "\nnot a fen at all\n")
    status, err = run_cli(capfd, "loop", "--runs-dir", str(tmp_path / "runs"), "--positions", str(bad))
    assert status == 2 and f"{bad}:2" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flag", ["--positions", "--eval-file"])
def test_a_missing_position_or_eval_file_is_one_line_and_exit_2(capfd, tmp_path, flag):
    status, err = run_cli(capfd, "loop", "--runs-dir", str(tmp_path / "runs"), flag, f"random,{tmp_path}/nope.epd")
    assert status == 2 and err.strip() == f"selfplay: error: no such file: {tmp_path}/nope.epd"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "chess", "--elo", "strong"], "comma-separated integers"),
        (["eval", "chess", "--eval-positions", "0"], "nothing to evaluate"),
        (["eval", "chess", "--opponent-limit", "depth=-1"], "--opponent-limit"),
        (["sft", "--targets", "vibes"], "choose engine or samples"),
        (["sft", "--positions", "selfplay"], "selfplay positions come from a running loop"),
        (["loop", "--positions", "a.epd:-1"], "--positions"),
        (["loop", "--selfplay-opponent", "grandmaster"], "--selfplay-opponent"),
        (["loop", "--engine-limit", "depth=deep"], "--engine-limit"),
        (["loop", "--prompt-style", "pgn"], "--prompt-style"),
        (["loop", "--train-reward", "vibes"], "--train-reward"),
        (["loop", "--report-to", "mlflow"], "--report-to 'mlflow'"),
        (["loop", "--resume", "no-such-run"], "no run 'no-such-run'"),
        (["loop", "--warm-start", "-1"], "--warm-start"),
        (["eval", "chess", "--prompt-style", "pgn"], "--prompt-style"),
        (["sft", "--prompt-style", "pgn"], "--prompt-style"),
    ],
)
def test_malformed_flags_of_every_command(capfd, tmp_path, argv, message):
    status, err = run_cli(capfd, *argv, "--runs-dir", str(tmp_path))
    assert status == 2 and message in err and not any(tmp_path.iterdir())


@pytest.mark.parametrize("command", [["eval", "chess", "--file"], ["sft", "--positions"]])
def test_malformed_position_file_stops_eval_and_sft_before_anything_is_made(capfd, tmp_path, command):
    bad = tmp_path / "bad.epd"
    bad.write_text("\x00\xff garbage ♞\n")
    status, err = run_cli(capfd, *command, str(bad), "--runs-dir", str(tmp_path / "runs"))
    assert status == 2 and f"{bad}:1" in err
    assert not (tmp_path / "runs").exists()


def test_eval_with_a_directory_that_is_no_adapter(capfd, tmp_path):
    status, err = run_cli(capfd, "eval", "chess", "--adapter", str(tmp_path), "--runs-dir", str(tmp_path / "runs"))
    assert status == 2 and "neither a LoRA adapter directory (adapter_config.json) nor a run" in err
    assert not (tmp_path / "runs").exists()


def chess_start() -> str:
    import chess

    return chess.STARTING_FEN


@pytest.mark.parametrize("command", [["loop"], ["eval", "chess"], ["sft"]])
def test_help_of_every_command_lists_its_flags(capfd, command):
    with pytest.raises(SystemExit) as exit_status:
        main([*command, "--help"])
    assert exit_status.value.code == 0
    assert "--prompt-style" in capfd.readouterr().out  # every help text formats (a bare % once broke it)


def test_through_a_pipe_our_tables_get_room_for_a_row_per_line():
    from selfplay.terminal import PIPE_WIDTH, output_console

    console = output_console()  # pytest captures stdout: not a terminal
    assert not console.is_terminal and console.width == PIPE_WIDTH
