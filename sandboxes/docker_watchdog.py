"""Removes a DockerSandbox's containers when the process that made it dies, even by kill -9.

    python sandboxes/docker_watchdog.py LABEL=OWNER PARENT_PID    # DockerSandbox starts it; SIGTERM sets it off

DockerSandbox starts this from its long-lived pool thread, with SIGTERM blocked and as its parent-death signal. It
waits for that signal, then force-removes every container with the label, runs in flight included. The agents in the
containers also stop when their stream closes, but a child the dead process forked (DataLoader workers and
multiprocessing fork) keeps that stream open: only this watchdog notices. `close()` kills it first (SIGKILL), as
the sandbox then removes its containers itself. Ctrl-C is for its parent, which closes the sandbox.
"""

import os
import signal
import sys

import docker
import docker.errors


def main() -> None:
    label, parent = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # blocked since before exec: never lost
    if os.getppid() == parent:  # else the parent died before the watch began
        signal.sigwait({signal.SIGTERM})
    client = docker.from_env()
    for container in client.api.containers(all=True, filters={"label": label}):
        try:
            client.api.remove_container(container["Id"], force=True)
        except docker.errors.NotFound:
            pass


if __name__ == "__main__":
    main()
