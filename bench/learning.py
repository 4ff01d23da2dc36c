"""The experiment log: every configuration tried, run with the same seeds, scored on the same held-out sets.

    python bench/learning.py --list                      # the configurations
    python bench/learning.py chess-default [more...]     # run them (each result replaces its old one)
    python bench/learning.py --table                     # the README's tables from bench/results/learning.json
    python bench/learning.py --rescore                   # rebuild the results from their run dirs
    python bench/learning.py --paired chess-fen-prompt chess-default   # the second minus the first, per position
    python bench/learning.py --paired EVAL_A EVAL_B      # the same for two `selfplay eval --out` dirs under runs/

Each configuration is `selfplay loop` with its flags, after `selfplay sft` with its own flags where it has them (the
loop then starts from the fine-tuned model, and its "before" is the fine-tuned model's); several fine-tunes run in
order, each from the model of the one before it and on other training positions (expert iteration).

Chess runs are scored before and after on the loop's random
playouts, bench/data/mate_in_one.epd and bench/data/winning_move.epd (`python bench/make_heldout_epd.py`); code runs
on the loop's held-out generated tasks and HumanEval. The figures are the held-out ones after training with their 95%
bootstrap intervals, the paired before -> after change, and the wall time of the whole run (CPU named beside it).
Results go to bench/results/learning.json, one entry per configuration and seed.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from selfplay.terminal import cpu_name

RESULTS = Path("bench/results/learning.json")
CHESS_SETS = "random,bench/data/mate_in_one.epd,bench/data/winning_move.epd"
CACHE = "--engine-cache=" + str(Path("~/.cache/selfplay/engine-evals.sqlite").expanduser())

# GRPO as it first ran: from the model as it is, on random playouts, at lr 3e-4, the FEN in the prompt (the defaults
# have moved since)
SAN = ["--prompt-style", "san"]
FIRST = ["--domain", "chess", "--warm-start", "0", "--positions", "random", *SAN, "--learning-rate", "3e-4"]
# name -> (what it tries, selfplay loop flags[, selfplay sft flags, ...]): each fine-tune starts from the last
CONFIGS = {
    "chess-uci-sorted": ("the first default: FEN + board + sorted UCI list, answers to the token budget, 20 steps",
                         [*FIRST, "--prompt-style", "uci", "--steps", "20"]),
    "chess-san-engine": ("SAN list shuffled per position, one-move answers, engine reward, 20 steps",
                         [*FIRST, "--train-reward", "engine", "--steps", "20"]),
    "chess-san-rank": ("as chess-san-engine, trained on the rank among legal moves",
                       [*FIRST, "--train-reward", "rank", "--steps", "20"]),
    "chess-sft1000-rank": ("fine-tune on Stockfish's best move (SAN) in 1000 playouts, then 20 GRPO steps on the rank",
                           [*FIRST, "--train-reward", "rank", "--steps", "20"],
                           ["--targets", "engine", "--examples", "1000", *SAN]),
    "chess-sft1000-engine-lr3e-5": ("the same fine-tune, then 20 GRPO steps on the engine reward at lr 3e-5",
                                    [*FIRST[:-1], "3e-5", "--steps", "20"],
                                    ["--targets", "engine", "--examples", "1000", *SAN]),
    "chess-sft1000mix-engine-lr1e-4": ("fine-tune on Stockfish's best move in 750 playouts and 250 generated mates in "
                                       "one, then 20 GRPO steps on the engine reward at lr 1e-4",
                                       [*FIRST[:-1], "1e-4", "--steps", "20"],
                                       ["--targets", "engine", "--examples", "1000", "--positions",
                                        "random:3,mate_in_one:1", *SAN]),
    "chess-fen-prompt": ("the default until 2026-12-04: the FEN before the shuffled SAN list (189 tokens a prompt); "
                         "fine-tune on 1000 engine moves (750 playouts, 250 generated mates in one) inside the loop, "
                         "then 20 GRPO steps on the engine reward at lr 3e-5",
                         ["--domain", "chess", "--prompt-style", "san"]),
    "chess-default": ("the default `make loop DOMAIN=chess`: chess-fen-prompt without the FEN (the `moves` prompt: "
                      "the side to move and the shuffled SAN list, 111 tokens)",
                      ["--domain", "chess"]),
    "chess-bonus1-lr1e-4": ("the default with a best-move bonus (weight 1, Chess-R1's) on the engine reward, GRPO at "
                            "lr 1e-4: does singling out the engine's move keep the tactics a higher rate unlearned?",
                            ["--domain", "chess", "--best-move-bonus", "1", "--learning-rate", "1e-4"]),
    "chess-knobs": ("the default with TRL's knobs against drift and collapse: KL to the fine-tuned model (beta 0.04), "
                    "unscaled advantages (scale_rewards none), clip-higher (epsilon_high 0.28), the best-move bonus, "
                    "GRPO at lr 1e-4",
                    ["--domain", "chess", "--beta", "0.04", "--scale-rewards", "none", "--grpo", "epsilon_high=0.28",
                     "--best-move-bonus", "1", "--learning-rate", "1e-4"]),
    "chess-ei": ("expert iteration after the default's fine-tune: the fine-tuned model samples 8 answers at "
                 "temperature 1 for 1000 other training positions, keeps its best where it is as good as the engine's "
                 "best move (engine reward 1.0), is fine-tuned on those, then the default's 20 GRPO steps",
                 ["--domain", "chess", "--warm-start", "0"],
                 ["--targets", "engine", "--examples", "1000", "--positions", "random:3,mate_in_one:1"],
                 ["--targets", "samples", "--examples", "1000", "--positions", "random:3,mate_in_one:1",
                  "--min-reward", "1.0"]),
    "chess-long": ("`selfplay loop --preset long`: the default with a fine-tune on 4000 engine moves, 40 GRPO steps, "
                   "and 20 games against Stockfish UCI_Elo 1350 at the end",
                   ["--domain", "chess", "--preset", "long"]),
    "code-grpo-t0.8": ("code as it first ran: GRPO from the base model at temperature 0.8, lr 3e-4, 20 steps",
                       ["--domain", "code", "--warm-start", "0", "--temperature", "0.8", "--steps", "20"]),
    "code-default": ("the default `make loop DOMAIN=code`: code-ei300 with a 2 GiB vLLM KV cache (more answers "
                     "decoded at once) and seeded sampling",
                     ["--domain", "code"]),
    "code-ei300": ("expert iteration: 4 samples at temperature 0.6 for 300 training tasks, fine-tune (2 epochs) on "
                   "the shortest passing one per task, then 20 GRPO steps at temperature 0.6",
                   ["--domain", "code", "--warm-start", "300", "--steps", "20"]),
}


def run(name: str, seed: int) -> dict:
    what, flags, *sft = CONFIGS[name]
    run_name = f"learning-{name}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    extra = ["--eval-file", CHESS_SETS, CACHE] if "chess" in flags else []
    selfplay = str(Path(sys.executable).with_name("selfplay"))
    start = time.perf_counter()
    reused = 0.0  # seconds of fine-tunes made by an earlier configuration: this one's wall counts them too
    warms = []  # the fine-tunes, in order: each starts from the model of the one before it
    for k, stage in enumerate(sft):  # a fine-tuned model is kept and shared by configurations with its stages, seed
        flags_name = "-".join(arg.lstrip("-") for arg in stage)
        warm = f"{warms[-1]}-then-{flags_name}" if warms else f"learning-sft-{flags_name}-s{seed}"
        if Path(f"runs/{warm}/model").is_dir():
            reused += sft_seconds(warm)
        else:
            base = ["--model", f"runs/{warms[-1]}/model"] if warms else []
            stage_seed = str(seed + 1000 * k)  # a later fine-tune draws other training positions
            subprocess.run([selfplay, "sft", *stage, *base, CACHE, "--seed", stage_seed, "--run", warm], check=True)
        warms.append(warm)
    if warms:
        extra += ["--model", f"runs/{warms[-1]}/model"]
    done = subprocess.run([selfplay, "loop", *flags, *extra, "--seed", str(seed), "--run", run_name])
    wall = time.perf_counter() - start + reused
    if done.returncode:
        return {"config": name, "seed": seed, "what": what, "flags": flags, "run": run_name,
                "returncode": done.returncode}
    return entry(name, seed, run_name, wall)


def entry(name: str, seed: int, run_name: str, wall: float) -> dict:
    """The result of a finished run: per held-out set and metric, before / fine-tuned / after with the changes."""
    what, flags, *_ = CONFIGS[name]
    evaluation = json.loads((Path("runs") / run_name / "eval.json").read_text())
    if "fine-tuned" in evaluation and "fine_tune_change" not in evaluation:  # a run from before the loop wrote it
        from selfplay.evaluate import compare

        evaluation["fine_tune_change"] = compare(held_out_of(run_name), evaluation["before"], evaluation["fine-tuned"])
    sets = {}
    for set_name, after in evaluation["after"]["sets"].items():
        sets[set_name] = {
            metric: {"before": evaluation["before"]["sets"][set_name].get(metric), "after": value,
                     "change": evaluation["change"].get(set_name, {}).get(metric)}
            for metric, value in after.items()
        }
        if "fine-tuned" in evaluation:  # the warm start's model, before GRPO, and its change since the base
            for metric, figures in sets[set_name].items():
                figures["fine-tuned"] = evaluation["fine-tuned"]["sets"][set_name].get(metric)
                figures["fine-tune change"] = evaluation["fine_tune_change"].get(set_name, {}).get(metric)
    return {"config": name, "seed": seed, "what": what, "flags": flags, "run": run_name, "returncode": 0,
            "wall_minutes": wall / 60, "cpu": cpu_name(), "sets": sets,
            "top_answer_share": top_answer_share(evaluation["after"]["completions"]),
            **{key: evaluation[key] for key in ("matches", "elo") if key in evaluation}}


def held_out_of(run_name: str) -> list[dict]:
    """The held-out rows a finished run was scored on, made again from its config.json."""
    from selfplay.config import make_config
    from selfplay.domains import get_domain

    settings = json.loads((Path("runs") / run_name / "config.json").read_text())
    config = make_config(**{k: v for k, v in settings.items() if k not in ("run", "model_path")})
    return get_domain(config.domain).eval_rows(config)


PAIRED_METRICS = {"skill": "skill", "solve_reward": "solved", "best_move_reward": "best move",
                  "legal_move_reward": "legal"}


def paired_table(results: list[dict], first: str, second: str) -> str:
    """Markdown: each chess held-out figure after training of `second` minus `first`, for every seed both ran,
    paired over the same positions (the sets are the same in both runs: checked position by position)."""
    lines = [f"| seed | set | metric | {first} | {second} | difference |", "|---|---|---|---|---|---|"]
    runs = {(r["config"], r["seed"]): r["run"] for r in results if not r.get("returncode")}
    for seed in sorted(seed for config, seed in runs if config == first and (second, seed) in runs):
        names = runs[first, seed], runs[second, seed]
        missing = [name for name in names if not (Path("runs") / name / "eval.json").exists()]
        if missing:  # the run dir stayed on the machine that ran it
            lines.append(f"| {seed} | not paired: no run dir {', '.join(missing)} here |||||")
            continue
        rows = [held_out_of(name) for name in names]
        if [row["fen"] for row in rows[0]] != [row["fen"] for row in rows[1]]:
            raise SystemExit(f"{names[0]} and {names[1]} were scored on different positions: not paired")
        scores = [json.loads((Path("runs") / name / "eval.json").read_text())["after"]["scores"] for name in names]
        for set_name in dict.fromkeys(row["set"] for row in rows[0]):
            at = [i for i, row in enumerate(rows[0]) if row["set"] == set_name]
            lines += paired_lines(f"{seed} | {set_name}", *({m: [run[m][i] for i in at] for m in PAIRED_METRICS}
                                                             for run in scores))
    return "\n".join(lines)


def paired_eval_table(first: str, second: str) -> str:
    """Markdown: the same, for two `selfplay eval` outputs under runs/ (each its own prompt style, say), row by row
    from their results.jsonl (the rows must be the same sets and ids, in the same order)."""
    runs = [[json.loads(line) for line in (Path("runs") / name / "results.jsonl").read_text().splitlines()]
            for name in (first, second)]
    if [(r["set"], r["id"], r.get("fen")) for r in runs[0]] != [(r["set"], r["id"], r.get("fen")) for r in runs[1]]:
        raise SystemExit(f"{first} and {second} scored different rows: not paired")
    lines = [f"| set | metric | {first} | {second} | difference |", "|---|---|---|---|---|"]
    for set_name in dict.fromkeys(r["set"] for r in runs[0]):
        size = sum(r["set"] == set_name for r in runs[0])
        lines += paired_lines(f"{set_name} ({size})", *({m: [r["scores"][m][0] for r in run if r["set"] == set_name]
                                                        for m in PAIRED_METRICS} for run in runs))
    return "\n".join(lines)


def paired_lines(label: str, first: dict, second: dict) -> list[str]:
    """Table lines of one held-out set: per metric (`first`, `second`: metric -> the set's scores, position by
    position), both means and second - first with its paired bootstrap interval."""
    from selfplay.stats import paired_difference

    lines = []
    for metric, name in PAIRED_METRICS.items():
        a, b = first[metric], second[metric]
        if None not in a and None not in b:
            mean, low, high = paired_difference(a, b)
            lines.append(f"| {label} | {name} | {sum(a) / len(a):.3f} | {sum(b) / len(b):.3f} | "
                         f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] |")
    return lines


def sft_seconds(warm: str) -> float:
    result = json.loads((Path("runs") / warm / "sft.json").read_text())
    return result["targets_seconds"] + result["train_seconds"]


def top_answer_share(completions: list[str]) -> float:
    """The share of the held-out answers taken by the most common answer string (collapse shows here)."""
    counts: dict[str, int] = {}
    for text in completions:
        counts[text.strip()] = counts.get(text.strip(), 0) + 1
    return max(counts.values()) / len(completions)


def cell(entry: dict | None, when: str) -> str:
    if not entry or not entry.get(when):
        return "-"
    mean, low, high = entry[when]
    return f"{mean:+.3f} [{low:+.2f}, {high:+.2f}]"


def rate(entry: dict | None, when: str) -> str:
    if not entry or not entry.get(when):
        return "-"
    mean, low, high = entry[when]
    return f"{100 * mean:.0f}% [{100 * low:.0f}, {100 * high:.0f}]"


def row(label: str, seed, sets: dict, when: str, top: str, wall: str, games: str = "") -> str:
    playouts, mate, winning = sets.get("playouts", {}), sets.get("mate_in_one", {}), sets.get("winning_move", {})
    return (f"| {label} | {seed} | {cell(playouts.get('skill'), when)} | "
            f"{rate(playouts.get('best_move_reward'), when)} | "
            f"{rate(mate.get('solve_reward'), when)} | {rate(winning.get('solve_reward'), when)} | "
            f"{rate(playouts.get('legal_move_reward'), when)} | {top} | {games} | {wall} |")


def games(result: dict) -> str:
    """The match played at the end (--games): wins, draws, losses and forfeits against each Stockfish level."""
    return "; ".join(f"{m['opponent_elo']}: +{m['wins']} ={m['draws']} -{m['losses']} ({m['forfeits']} forfeits)"
                     for m in result.get("matches", []))


def table(results: list[dict]) -> str:
    """Markdown: the base model and the greedy reference first (from the first SAN run), then every configuration
    after training; a fine-tuned configuration also shows its model before GRPO."""
    lines = ["| configuration | seed | skill, playouts | best move, playouts | mate in one solved | winning move "
             "solved | legal, playouts | top answer | games vs Stockfish UCI_Elo | wall (min) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    san = next((r for r in results if not r.get("returncode") and "uci" not in r["flags"] and len(r["flags"]) > 0
                and not r["config"].startswith(("chess-sft", "chess-ei"))), None)
    if san:
        lines.append(row("base model (SAN prompt)", san["seed"], san["sets"], "before", "", ""))
        greedy = {name: {"skill": figures.get("greedy_skill")} for name, figures in san["sets"].items()}
        lines.append(row("greedy one-ply player (reference)", "", greedy, "before", "", ""))
    shown = set()  # fine-tunes already shown (configurations share them)
    for r in results:
        if r.get("returncode"):
            lines.append(f"| {r['config']} | {r['seed']} | failed (exit {r['returncode']}) ||||||||")
            continue
        entry = CONFIGS.get(r["config"], ("", []))
        sft = " then sft ".join(" ".join(stage) for stage in entry[2:])
        if sft and (sft, r["seed"]) not in shown:
            shown.add((sft, r["seed"]))
            lines.append(row(f"fine-tuned only: sft {sft}", r["seed"], r["sets"], "before", "", ""))
        elif "fine-tuned" in r["sets"].get("playouts", {}).get("skill", {}):  # the loop's own warm start
            lines.append(row(f"{r['config']}: fine-tuned, before GRPO", r["seed"], r["sets"], "fine-tuned", "", ""))
        lines.append(row(r["config"], r["seed"], r["sets"], "after", f"{100 * r['top_answer_share']:.0f}%",
                         f"{r['wall_minutes']:.1f}", games(r)))
    return "\n".join(lines)


def change(entry: dict | None) -> str:
    if not entry:
        return "-"
    mean, low, high = entry
    return "no change" if low <= 0 <= high else f"{100 * mean:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def code_table(results: list[dict]) -> str:
    """Markdown: held-out pass@1 of the code runs (generated tasks, HumanEval), with the paired change in points; a
    warm-started configuration also shows its fine-tuned model before GRPO."""
    lines = ["| configuration | seed | generated pass@1 | change (points) | HumanEval pass@1 | change (points) | "
             "wall (min) |", "|---|---|---|---|---|---|---|"]

    def code_row(label, seed, sets, when, since, wall):
        generated = sets.get("generated", {}).get("unit_test_reward", {})
        humaneval = sets.get("humaneval", {}).get("unit_test_reward", {})
        return (f"| {label} | {seed} | {rate(generated, when)} | {change(generated.get(since))} | "
                f"{rate(humaneval, when)} | {change(humaneval.get(since))} | {wall} |")

    for r in results:
        if r.get("returncode"):
            lines.append(f"| {r['config']} | {r['seed']} | failed (exit {r['returncode']}) |||||")
            continue
        if r is results[0]:
            lines.append(code_row("base model", r["seed"], r["sets"], "before", None, ""))
        if "fine-tuned" in r["sets"].get("generated", {}).get("unit_test_reward", {}):
            lines.append(code_row(f"{r['config']}: fine-tuned, before GRPO", r["seed"], r["sets"], "fine-tuned",
                                  "fine-tune change", ""))
        lines.append(code_row(r["config"], r["seed"], r["sets"], "after", "change", f"{r['wall_minutes']:.1f}"))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", help="configurations to run (see --list)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, the same for every configuration")
    parser.add_argument("--list", action="store_true", help="list the configurations")
    parser.add_argument("--table", action="store_true", help="print the results as markdown tables")
    parser.add_argument("--paired", nargs=2, metavar=("FIRST", "SECOND"),
                        help="SECOND's held-out figures minus FIRST's, per seed, paired over the same positions: "
                             "two configurations, or two `selfplay eval --out` dirs under runs/")
    parser.add_argument("--rescore", action="store_true",
                        help="rebuild the results whose run dir is here from its eval.json, keeping the wall time")
    args = parser.parse_args()
    if args.list:
        for name, (what, flags, *sft) in CONFIGS.items():
            print(f"{name:24} {what}")
            for stage in sft:
                print(f"{'':24} selfplay sft {' '.join(stage)}")
            print(f"{'':24} selfplay loop {' '.join(flags)}")
        return
    if args.paired:
        if all((Path("runs") / name / "results.jsonl").exists() for name in args.paired):
            print(paired_eval_table(*args.paired))
        elif all(name in CONFIGS for name in args.paired):
            print(paired_table(json.loads(RESULTS.read_text()), *args.paired))
        else:
            parser.error(f"--paired {' '.join(args.paired)}: expected two configurations (see --list) or two "
                         "`selfplay eval --out` directories under runs/")
        return
    unknown = [name for name in args.configs if name not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(unknown)}: see --list")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    for name in args.configs:
        for seed in (int(s) for s in args.seeds.split(",")):
            result = run(name, seed)
            results = [r for r in results if (r["config"], r["seed"]) != (name, seed)] + [result]
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    if args.rescore:
        results = [entry(r["config"], r["seed"], r["run"], 60 * r["wall_minutes"])
                   if not r.get("returncode") and (Path("runs") / r["run"] / "eval.json").exists() else r
                   for r in results]
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    if args.table or not args.configs:
        rank = {name: i for i, name in enumerate(CONFIGS)}
        ordered = sorted(results, key=lambda r: (rank.get(r["config"], len(rank)), r["seed"]))
        print(table([r for r in ordered if r["config"].startswith("chess")]))
        print()
        print(code_table([r for r in ordered if r["config"].startswith("code")]))


if __name__ == "__main__":
    main()
