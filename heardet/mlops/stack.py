"""A team tracking stack on one machine: a PostgreSQL server (Debian's ``postgresql`` packages,
its data directory under ``root``, TCP on 127.0.0.1 only, no Unix socket) and ``mlflow server`` on it, with proxied artifact storage,
both listening on 127.0.0.1 only.

``start`` initialises the database cluster on first use (a superuser ``heardet`` with a random
password kept in ``root/pgpass``, mode 0600, which libpq reads through ``PGPASSFILE``; nothing
else holds it), creates the databases ``mlflow`` (runs and registered models) and ``optuna``
(tuning studies), starts both servers and waits until MLflow answers. ``stop`` stops them; the
data stay for the next ``start``. PostgreSQL refuses to run as root: as root its commands run as
the ``postgres`` user, which owns the data directory.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, replace
from pathlib import Path

logger = logging.getLogger(__name__)

STATE_FILE = "stack.json"
USER = "heardet"
DATABASES = ("mlflow", "optuna")
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"  # Debian keeps the server binaries off PATH


class StackError(RuntimeError):
    """The stack could not be started or stopped (the message says which part and why)."""


@dataclass(frozen=True)
class Stack:
    """Where a running stack listens and keeps its files."""

    root: str
    pg_port: int
    mlflow_port: int
    mlflow_pid: int

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def pgpass(self) -> Path:
        return Path(self.root) / "pgpass"

    def database_url(self, name: str) -> str:
        """``postgresql://heardet@127.0.0.1:PORT/name``: no password in it (libpq reads ``PGPASSFILE``)."""
        return f"postgresql://{USER}@127.0.0.1:{self.pg_port}/{name}"

    @property
    def optuna_storage(self) -> str:
        return self.database_url("optuna")

    def env(self) -> dict[str, str]:
        """The environment a client of the stack needs."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "PGPASSFILE": str(self.pgpass),
                "HEARDET_OPTUNA_STORAGE": self.optuna_storage}

    def exports(self) -> str:
        """Shell lines that point a session at the stack."""
        return "\n".join(f"export {k}={v}" for k, v in self.env().items())


def start(root: str | os.PathLike = ".stack", mlflow_port: int = 5000, timeout_s: float = 180) -> Stack:
    """Start PostgreSQL and ``mlflow server`` under ``root`` (or find them running); returns the stack.

    Args:
        root: the stack's directory (created; PostgreSQL's data in ``root/pg``, artifacts in
            ``root/artifacts``, logs ``root/*.log``).
        mlflow_port: the tracking server's port on 127.0.0.1 (0: a free one).
        timeout_s: how long to wait for the tracking server to answer.

    Raises:
        StackError: PostgreSQL is not installed, or a server did not start (with its log's tail).
    """
    root = Path(root).resolve()
    running = status(root)
    if running is not None:
        logger.info("stack already running in %s", root)
        return running
    root.mkdir(parents=True, exist_ok=True)
    pg_port = _previous(root).get("pg_port") or _free_port()
    pgdata = root / "pg"
    if not (pgdata / "PG_VERSION").exists():
        _init_cluster(root, pgdata)
    _pg(["pg_ctl", "-D", str(pgdata), "-l", str(pgdata / "postgres.log"), "-w", "-t", "60",
         "-o", f"-p {pg_port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''", "start"], root)
    stack = Stack(str(root), pg_port, mlflow_port or _free_port(), mlflow_pid=0)  # the server is not up yet
    _create_databases(stack)
    (root / "artifacts").mkdir(exist_ok=True)
    mlflow = str(Path(sys.executable).parent / "mlflow")
    with open(root / "mlflow.log", "ab") as log:
        server = subprocess.Popen(
            [mlflow, "server", "--backend-store-uri", stack.database_url("mlflow"), "--serve-artifacts",
             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(stack.mlflow_port)],
            env={**os.environ, "PGPASSFILE": str(stack.pgpass)}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    stack = replace(stack, mlflow_pid=server.pid)
    (root / STATE_FILE).write_text(json.dumps(asdict(stack), indent=2) + "\n")
    deadline = time.time() + timeout_s
    while not _answers(stack):
        if server.poll() is not None or time.time() > deadline:
            stop(root)
            raise StackError(f"mlflow server did not start on port {stack.mlflow_port}:\n"
                             f"{_tail(root / 'mlflow.log')}")
        time.sleep(1)
    logger.info("stack running: PostgreSQL on 127.0.0.1:%d, MLflow on %s", pg_port, stack.tracking_uri)
    return stack


def stop(root: str | os.PathLike = ".stack") -> bool:
    """Stop the tracking server and PostgreSQL started in ``root``; False when nothing ran."""
    root = Path(root).resolve()
    state = _previous(root)
    stopped = False
    pid = state.get("mlflow_pid")
    if pid and _alive(pid):
        os.killpg(pid, signal.SIGTERM)
        for _ in range(100):
            if not _alive(pid):
                break
            time.sleep(0.1)
        else:
            os.killpg(pid, signal.SIGKILL)
        stopped = True
    pgdata = root / "pg"
    if (pgdata / "postmaster.pid").exists():
        _pg(["pg_ctl", "-D", str(pgdata), "-m", "fast", "-w", "stop"], root)
        stopped = True
    if state:
        (root / STATE_FILE).write_text(json.dumps({**state, "mlflow_pid": 0}, indent=2) + "\n")
    return stopped


def status(root: str | os.PathLike = ".stack") -> Stack | None:
    """The stack running in ``root``, or None."""
    state = _previous(Path(root).resolve())
    if not state or not state.get("mlflow_pid") or not _alive(state["mlflow_pid"]):
        return None
    stack = Stack(**state)
    return stack if _answers(stack) else None


def _previous(root: Path) -> dict:
    try:
        return json.loads((root / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _init_cluster(root: Path, pgdata: Path) -> None:
    password = secrets.token_urlsafe(24)
    pgpass = root / "pgpass"
    pgpass.touch(mode=0o600)
    pgpass.chmod(0o600)
    pgpass.write_text(f"127.0.0.1:*:*:{USER}:{password}\n")
    pgdata.mkdir(mode=0o700, exist_ok=True)  # empty after a failed initdb: initdb takes it
    pwfile = root / ".initdb-password"  # read by initdb, then removed
    pwfile.touch(mode=0o600)
    pwfile.write_text(password + "\n")
    try:
        if os.geteuid() == 0:
            for path in (pgdata, pwfile):
                shutil.chown(path, "postgres", "postgres")
            if subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(pgdata)]).returncode:
                raise StackError(f"the postgres user cannot reach {pgdata}: make every folder above it searchable "
                                 "(chmod o+x), or give the stack a root elsewhere")
        _pg(["initdb", "-D", str(pgdata), "-U", USER, f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
             "--no-instructions"], root)
    finally:
        pwfile.unlink(missing_ok=True)


def _create_databases(stack: Stack) -> None:
    import psycopg  # the driver SQLAlchemy 2.1 uses for postgresql:// URLs (MLflow, Optuna)

    try:
        connection = psycopg.connect(host="127.0.0.1", port=stack.pg_port, user=USER, dbname="postgres",
                                     passfile=str(stack.pgpass), autocommit=True)
    except psycopg.Error as exc:
        raise StackError(f"cannot connect to PostgreSQL on 127.0.0.1:{stack.pg_port}: {exc}") from None
    try:  # autocommit: CREATE DATABASE runs outside a transaction
        with connection.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database")
            have = {row[0] for row in cursor.fetchall()}
            for name in DATABASES:
                if name not in have:
                    cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()


def _pg(command: list[str], root: Path) -> None:
    """Run a PostgreSQL server tool (as ``postgres`` when this process is root)."""
    binary = _pg_binary(command[0])
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    result = subprocess.run(prefix + [binary, *command[1:]], capture_output=True, text=True)
    if result.returncode != 0:
        log = root / "pg" / "postgres.log"
        raise StackError(f"{command[0]} {command[-1]} failed ({result.returncode}): "
                         f"{(result.stderr or result.stdout).strip()[-1500:]}"
                         + (f"\n{_tail(log)}" if log.exists() else ""))


def _pg_binary(name: str) -> str:
    found = sorted(Path("/").glob(PG_BIN_GLOB.lstrip("/")), key=lambda p: int(p.parent.name)
                   if p.parent.name.isdigit() else 0)
    for directory in reversed(found):
        if (directory / name).exists():
            return str(directory / name)
    path = shutil.which(name)
    if path:
        return path
    raise StackError(f"PostgreSQL's {name} not found (in {PG_BIN_GLOB} or on PATH): `make setup` installs "
                     "Debian's postgresql package")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this process is not alive
        finished, _ = os.waitpid(pid, os.WNOHANG)
        return finished == 0
    except ChildProcessError:
        return True


def _answers(stack: Stack) -> bool:
    try:
        with urllib.request.urlopen(f"{stack.tracking_uri}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
