"""Docker sandboxes on the engine that DOCKER_HOST names, not only the local default socket.

The test's DOCKER_HOST is a socket of its own that forwards to the real daemon and counts what passes: every call
of the sandbox, its pool thread and its watchdog must go there (a remote engine is reached the same way, with
DOCKER_HOST=tcp://host:2376 or ssh://user@host and the image built there by `make sandbox-image`).
"""

import os
import socket
import threading

import pytest

from sandboxes import SandboxError


class CountingForwarder:
    """A unix socket at `path` whose connections are piped to the daemon socket `target`, counted."""

    def __init__(self, path: str, target: str):
        self.target, self.connections = target, 0
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(path)
        self.server.listen(64)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            daemon = socket.socket(socket.AF_UNIX)
            daemon.connect(self.target)
            for source, sink in ((client, daemon), (daemon, client)):
                threading.Thread(target=self.pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def pipe(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        self.server.close()


def test_docker_sandboxes_run_on_the_engine_that_docker_host_names(tmp_path, monkeypatch):
    from sandboxes.docker import DockerSandbox

    target = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
    if not os.path.exists(target):
        pytest.skip(f"no Docker daemon socket at {target}")
    forwarder = CountingForwarder(str(tmp_path / "docker.sock"), target)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'docker.sock'}")
    try:
        try:
            sandbox = DockerSandbox()
        except SandboxError as error:
            pytest.skip(f"Docker is not usable here: {error}")
        with sandbox:
            result = sandbox.run(["python3", "-c", "print(6 * 7)"])
            watchdog_env = open(f"/proc/{sandbox.watchdog.pid}/environ", "rb").read().split(b"\0")
        assert result.exit_code == 0 and result.stdout.strip() == "42"
        assert forwarder.connections >= 3  # the client's pings and runs, the pool's container streams
        assert f"DOCKER_HOST=unix://{tmp_path / 'docker.sock'}".encode() in watchdog_env
    finally:
        forwarder.close()

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'nothing.sock'}")
    with pytest.raises(SandboxError, match="cannot reach the Docker daemon"):
        DockerSandbox()
