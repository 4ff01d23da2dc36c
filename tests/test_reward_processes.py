"""The rewards in a user's own script (real Stockfish, real bwrap): it exits when it ends, with or without `close()`,
no engine or sandbox process outlives it, even after kill -9, and in a user's own TRL `GRPOTrainer` (on the CPU, no
vLLM) each reward logs under its own name."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
from trl.trainer.utils import get_callable_name

from rewards.chess import ChessRewards
from rewards.code import CodeRewards
from sandboxes import SandboxError

START = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1"
CHESS = f"""
from rewards.chess import ChessRewards, EnginePool
rewards = ChessRewards(EnginePool(size=2))
print(rewards.engine_reward(None, ["e2e4", "a2a3"], fen=[{START!r}] * 2), flush=True)
"""
CODE = """
from rewards.code import CodeRewards
from sandboxes.bwrap import BwrapSandbox
rewards = CodeRewards(BwrapSandbox())
solutions = ["def add(a, b):\\n    return a + b\\n", "def add(a, b):\\n    return a - b\\n"]
print(rewards.unit_test_reward(None, solutions, tests=["assert add(1, 2) == 3"] * 2), flush=True)
"""
DOCKER_CODE = CODE.replace("sandboxes.bwrap import BwrapSandbox", "sandboxes.docker import DockerSandbox").replace(
    "BwrapSandbox()", "DockerSandbox()")
SAY_PIDS = """
import psutil
print(*[p.pid for p in psutil.Process().children(recursive=True)], flush=True)
"""
# A run in the sandbox that lasts: the kill comes while it runs (until its wall limit an agent would not notice).
# (The test runs no other sandbox meanwhile: any worker.py on the host is this run's.)
MID_RUN = """
import threading, time, psutil

def running():  # bwrap's and Docker's sandboxed processes are visible from the host
    for process in psutil.process_iter():
        try:
            if "worker.py" in process.cmdline():
                return True
        except psutil.Error:
            pass
    return False

sleeper = "import time\\ntime.sleep(60)\\n"
threading.Thread(target=rewards.unit_test_reward, args=(None, [sleeper]), kwargs={"tests": ["assert add(1, 2) == 3"]},
                 daemon=True).start()
while not running():
    time.sleep(0.05)
"""
# A child forked as DataLoader workers and multiprocessing fork them keeps our end of the engines' and agents' pipes
# open: they see no end of their stdin when we die, only the parent-death signal ends them.
FORK_THEN_WAIT = """
import os, time
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
time.sleep(60)
"""
SCORES = {CHESS: "[1.0, 0.9765]", CODE: "[1.0, 0.0]", DOCKER_CODE: "[1.0, 0.0]"}


@pytest.fixture(scope="module")
def bwrap():
    from sandboxes.bwrap import BwrapSandbox

    try:
        BwrapSandbox().close()
    except SandboxError as error:
        pytest.skip(f"bwrap is not usable here: {error}")


@pytest.fixture(scope="module")
def docker_sandbox():
    from sandboxes.docker import DockerSandbox

    try:
        DockerSandbox().close()
    except SandboxError as error:
        pytest.skip(f"Docker is not usable here: {error}")


def gone(pids: list[int], within: float = 5.0) -> bool:
    """Every process of `pids` ended (a zombie waiting for its new parent to reap it has ended) within `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                alive += [pid] if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE else []
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return True
        time.sleep(0.05)
    return False


def worker_pids() -> list[int]:
    """The test runner's workers (worker.py) running anywhere on the host."""
    pids = []
    for process in psutil.process_iter():
        try:
            pids += [process.pid] if "worker.py" in process.cmdline() else []
        except psutil.Error:
            pass
    return pids


def check_script_exits(script: str, close: bool) -> None:
    ending = "rewards.close()\n" if close else ""
    done = subprocess.run([sys.executable, "-c", script + SAY_PIDS + ending], capture_output=True, text=True,
                          timeout=30)  # before the fix it never ended: Python joined the engines' threads
    assert done.returncode == 0, done.stderr
    scores, pids = done.stdout.splitlines()
    assert scores == SCORES[script]
    assert gone([int(pid) for pid in pids.split()])


def check_kill_leaves_nothing(script: str, then: str = "") -> None:
    proc = subprocess.Popen([sys.executable, "-c", script + then + SAY_PIDS + FORK_THEN_WAIT], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == SCORES[script]
        pids = [int(pid) for pid in proc.stdout.readline().split()]
        child = int(proc.stdout.readline())
        owner = f"{socket.gethostname()}:{proc.pid}:{psutil.Process(proc.pid).create_time()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        try:
            assert pids and gone(pids, within=30)
            if then == MID_RUN:
                assert gone(worker_pids(), within=30)
            if script == DOCKER_CODE:
                import docker

                client = docker.from_env()
                assert client.api.containers(all=True, filters={"label": f"selfplay.sandbox.owner={owner}"}) == []
                client.close()
        finally:
            os.kill(child, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("close", [False, True], ids=["without close", "with close"])
def test_a_script_with_the_chess_rewards_exits_and_leaves_no_stockfish(close):
    check_script_exits(CHESS, close)


def test_stockfish_dies_with_a_script_killed_by_sigkill():
    check_kill_leaves_nothing(CHESS)


@pytest.mark.parametrize("close", [False, True], ids=["without close", "with close"])
def test_a_script_with_the_code_rewards_exits_and_leaves_no_sandbox(bwrap, close):
    check_script_exits(CODE, close)


def test_the_sandboxes_die_with_a_script_killed_by_sigkill_mid_run(bwrap):
    check_kill_leaves_nothing(CODE, MID_RUN)


def test_the_docker_containers_go_with_a_script_killed_by_sigkill_mid_run(docker_sandbox):
    """Its forked child keeps the containers' streams open: the watchdog removes them, the run included."""
    check_kill_leaves_nothing(DOCKER_CODE, MID_RUN)


USER_TRAINER = """
import json, tempfile
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer
from rewards.chess import ChessRewards, legal_move_reward
from selfplay.domains.chess import position_prompt, random_positions

rewards = ChessRewards()
rewards.engine_reward(None, ["e4"], fen=[{start!r}])  # the engines run: a tiny random model names no legal move
rows = [{{"prompt": position_prompt(fen), "fen": fen}} for fen in random_positions(2, seed=0)]
args = GRPOConfig(output_dir=tempfile.mkdtemp(), max_steps=1, per_device_train_batch_size=4, num_generations=4,
                  max_completion_length=4, use_cpu=True, bf16=False, report_to=[], logging_steps=1, save_strategy="no")
trainer = GRPOTrainer(model={model!r}, args=args, train_dataset=Dataset.from_list(rows),
                      reward_funcs=[rewards.engine_reward, legal_move_reward])
trainer.train()
print(json.dumps(sorted(key for key in trainer.state.log_history[0] if key.startswith("rewards/"))), flush=True)
"""


@pytest.mark.slow
def test_the_rewards_in_a_users_own_grpo_trainer_log_under_their_names_and_exit(tiny_model):
    done = subprocess.run([sys.executable, "-c", USER_TRAINER.format(model=tiny_model, start=START) + SAY_PIDS],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    *_, metrics, pids = done.stdout.splitlines()
    assert json.loads(metrics) == ["rewards/engine_reward/mean", "rewards/engine_reward/std",
                                   "rewards/legal_move_reward/mean", "rewards/legal_move_reward/std"]
    pids = [int(pid) for pid in pids.split()]
    assert pids and gone(pids)


def test_trl_names_each_reward_by_its_metric_name(bwrap):
    with ChessRewards() as chess_rewards, CodeRewards() as code_rewards:
        rewards = [chess_rewards.engine_reward, chess_rewards.rank_reward, chess_rewards.best_move_reward,
                   code_rewards.unit_test_reward, code_rewards.unit_test_pass_fraction]
        assert [get_callable_name(f) for f in rewards] == [
            "engine_reward", "rank_reward", "best_move_reward", "unit_test_reward", "unit_test_pass_fraction"]
