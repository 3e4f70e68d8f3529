"""A real RabbitMQ for tests: Debian's ``rabbitmq-server`` on free loopback ports, its own node.

Each server has its own node name, data and log directories, Erlang cookie and ``epmd`` (on a
port of its own, so it never meets a system broker). ``stop()`` halts it gracefully, ``kill()``
as a crash would; ``start()`` again keeps the port and the data. Where the broker is missing or
cannot start, tests skip with the reason, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

__all__ = ["RabbitMQServer", "require_rabbitmq"]

# Debian's /usr/sbin scripts switch to the `rabbitmq` user and its home; the scripts they call
# run as whoever starts them, which keeps every file of this private node in our directory.
_DEBIAN_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
_START_TIMEOUT = 120.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    """Skip locally, fail in CI: CI must run the broker tests."""
    if _in_ci():
        pytest.fail(reason + "; CI must run the RabbitMQ tests")
    pytest.skip(reason)


def require_rabbitmq() -> tuple[Path, Path, str]:
    """The ``rabbitmq-server`` and ``rabbitmqctl`` scripts and ``epmd``; skip/fail if missing."""
    if (_DEBIAN_SCRIPTS / "rabbitmq-server").exists():
        scripts = _DEBIAN_SCRIPTS
    else:
        found = shutil.which("rabbitmq-server")
        scripts = Path(found).resolve().parent if found else Path("/nonexistent")
    epmd = shutil.which("epmd") or next(
        (str(p) for p in Path("/usr/lib/erlang").glob("erts-*/bin/epmd")), None
    )
    if not (scripts / "rabbitmq-server").exists() or not (scripts / "rabbitmqctl").exists():
        _unavailable("rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server)")
    if epmd is None:
        _unavailable("epmd (Erlang) is not installed (Debian: apt-get install rabbitmq-server)")
    assert epmd is not None
    return scripts / "rabbitmq-server", scripts / "rabbitmqctl", epmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class RabbitMQServer:
    """One private RabbitMQ node; ``url`` is ``amqp://guest:guest@127.0.0.1:<port>/``."""

    def __init__(self) -> None:
        self.server_script, self.ctl_script, self.epmd_binary = require_rabbitmq()
        self.port = _free_port()
        self.dist_port = _free_port()
        self.epmd_port = _free_port()
        self.node = f"rt{os.getpid()}x{self.port}@localhost"
        self.dir = Path(tempfile.mkdtemp(prefix="rt-rabbitmq-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.epmd: subprocess.Popen[bytes] | None = None
        self._prepare()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _prepare(self) -> None:
        home = self.dir / "home"
        for sub in ("home", "mnesia", "log"):
            (self.dir / sub).mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        # guest may log in from 127.0.0.1 by default only; `none` also allows `localhost`.
        (self.dir / "rabbitmq.conf").write_text("loopback_users = none\n")
        (self.dir / "enabled_plugins").write_text("[].\n")  # no management UI: starts faster
        (self.dir / "rabbitmq-env.conf").write_text("")  # never read the system's
        self.env = {
            **os.environ,
            "HOME": str(home),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            # rabbitmqctl's own node listens in 35672-35682 by default, shared by every node on
            # the machine: 0 lets the system pick a free port for each call instead.
            "RABBITMQ_CTL_DIST_PORT_MIN": "0",
            "RABBITMQ_CTL_DIST_PORT_MAX": "0",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(self.dir / "feature_flags"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
        }

    def running(self) -> bool:
        """Whether the broker process is alive (it may still be booting)."""
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the node (about 8 s) and return once it accepts AMQP connections."""
        if self.running():
            return
        if self.epmd is None or self.epmd.poll() is not None:
            # Our own epmd in the foreground: the node finds it and starts no daemon of its own.
            self.epmd = subprocess.Popen(
                [self.epmd_binary, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        with open(self.dir / "server.out", "ab") as out:
            self.proc = subprocess.Popen(
                [str(self.server_script)], env=self.env, cwd=self.dir, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if _accepts(self.port):
                done = self._ctl_run("await_startup", "--timeout", "60")
                if done.returncode == 0:
                    return
            time.sleep(0.2)
        tail = (self.dir / "server.out").read_text(errors="replace")[-2000:]
        self.close()
        _unavailable(f"rabbitmq-server did not start within {_START_TIMEOUT:.0f} s:\n{tail}")

    def stop(self) -> None:
        """Halt the node gracefully (its script turns SIGTERM into a clean shutdown)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=60)
        self._reap()

    def kill(self) -> None:
        """End the node at once, as a crash or a lost machine would."""
        if self.proc is None:
            return
        self._reap()

    def restart(self) -> None:
        """Stop and start again on the same port; durable exchanges survive."""
        self.stop()
        self.start()

    def _reap(self) -> None:
        """SIGKILL whatever is left of the node's process group, and wait for it."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None
        # The VM's helpers (erl_child_setup, inet_gethost) share the group: wait for them too.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _accepts(self.port):
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the node and its epmd and remove every file."""
        self.stop()
        if self.epmd is not None:
            self.epmd.kill()
            self.epmd.wait(timeout=10)
            self.epmd = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def _ctl_run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.ctl_script), "-n", self.node, *args], env=self.env, cwd=self.dir,
            capture_output=True, text=True, timeout=120,
        )

    def ctl(self, *args: str) -> str:
        """Run ``rabbitmqctl -n NODE ARGS...`` against this node and return its output."""
        done = self._ctl_run(*args)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def _listing(self, *args: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.ctl(*args, "-q", "--formatter", "json"))
        return rows

    def bindings(self, queue_prefix: str = "") -> list[dict[str, str]]:
        """The bindings to queues named ``queue_prefix...``: source, queue, routing key.

        The default exchange's implicit binding of every queue to its own name is left out.
        """
        rows = self._listing(
            "list_bindings", "source_name", "destination_name", "destination_kind",
            "routing_key",
        )
        return [
            {"exchange": r["source_name"], "queue": r["destination_name"],
             "routing_key": r["routing_key"]}
            for r in rows
            if r["destination_kind"] == "queue" and r["source_name"] != ""
            and str(r["destination_name"]).startswith(queue_prefix)
        ]

    def queues(self) -> list[str]:
        """The names of every queue on the node."""
        return [str(r["name"]) for r in self._listing("list_queues", "name")]

    def exchanges(self) -> list[dict[str, Any]]:
        """Every exchange on the node: name, type, durable."""
        return self._listing("list_exchanges", "name", "type", "durable")

    def __enter__(self) -> RabbitMQServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
