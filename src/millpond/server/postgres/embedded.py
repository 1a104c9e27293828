"""The embedded PostgreSQL cluster: binaries from the ``pgserver`` wheel, data in
``<data_dir>/pg``.

The cluster is private to millpond: it listens only on a Unix socket in a directory
only its owner can reach, requires SCRAM passwords even there, and runs with
``wal_level=logical`` for realtime. The superuser password is generated at ``initdb``
time into ``<data_dir>/pg-password`` (mode 0600).

Postgres refuses to run as root; when millpond runs as root, the cluster runs as the
system user ``millpond-pg``, which owns only the cluster's directory. What that needs
(the user, traverse rights) is said first, then done unless refused: see
:mod:`.as_root`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

from . import as_root, scram

_log = logging.getLogger("millpond.postgres")

SUPERUSER = "millpond"
SYSTEM_USER = "millpond-pg"
PORT = 5432
_SOCKET_LOCK = f".s.PGSQL.{PORT}.lock"
_FAST_STOP_S = 60
TEMPLATE_ENV = "MILLPOND_PG_TEMPLATE"
"""A directory: new clusters are copies of the one kept there (made by the first
``initdb``), instead of an ``initdb`` each. For test suites, which make dozens: the
copies share the template's superuser password, so never for a real installation."""

_CONF = """\
# written by millpond; edit settings in postgresql.auto.conf (ALTER SYSTEM) instead
listen_addresses = ''
unix_socket_directories = '{socket_dir}'
unix_socket_permissions = 0700
port = {port}
wal_level = logical
max_wal_senders = 64
max_replication_slots = 64
max_connections = 300
password_encryption = 'scram-sha-256'
logging_collector = off
log_min_messages = warning
"""


@functools.cache
def _install_dir() -> str | None:
    try:
        return str(bin_dir().parent)
    except RuntimeError:  # no pgserver: nothing of it to hide
        return None


def hide_install(text: str | None) -> str | None:
    """``text`` (a Postgres message for a tenant) without the path of the embedded
    Postgres' installation, which some messages name (an extension's control file)."""
    where = _install_dir()
    if text is None or where is None:
        return text
    return text.replace(where, "…")


def bin_dir() -> Path:
    """Directory of the Postgres binaries shipped in the ``pgserver`` wheel."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded Postgres needs the 'pgserver' package: pip install 'millpond[server]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class EmbeddedPostgres:
    """Starts and stops a private Postgres cluster in ``data_dir``."""

    def __init__(self, data_dir: Path, *, allow_root_setup: bool = True) -> None:
        """``allow_root_setup``: as root, whether :meth:`start` may make the changes
        :mod:`.as_root` lists (the server's setting of that name)."""
        self.allow_root_setup = allow_root_setup
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pg"
        self.password_file = self.data_dir / "pg-password"
        self.log_file = self.pgdata / "server.log"
        self.socket_dir = self._choose_socket_dir()
        self._run_as = SYSTEM_USER if os.geteuid() == 0 else None

    # -- public -------------------------------------------------------------------------

    def start(self) -> None:
        """Initialise the cluster on first use, then start it (no-op if already running)."""
        if self._run_as:
            self._set_up_as_root()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        self._write_conf()
        if self.is_running():
            _log.info("embedded Postgres already running in %s", self.pgdata)
            return
        self._launch()

    def root_plan(self) -> as_root.RootPlan:
        """As root: what the machine lacks for the Postgres user (see :mod:`.as_root`).
        RootSetupRefused, saying what, when millpond may not make those changes: refused
        by ``allow_root_setup``, or a grant that would widen someone else's rights."""
        plan = as_root.plan(SYSTEM_USER, [self.data_dir, self.socket_dir.parent, bin_dir()])
        if plan.manual:
            raise as_root.RootSetupRefused(plan.describe())
        if plan.changes and not self.allow_root_setup:
            raise as_root.RootSetupRefused(plan.describe() + "\n" + as_root.HOW_TO_ALLOW)
        return plan

    def _set_up_as_root(self) -> None:
        """Say what running as root changes, then change it (unless refused: see
        :meth:`root_plan`); make the directories millpond creates (data, sockets)
        reachable by the Postgres user."""
        plan = self.root_plan()
        if plan.changes:
            _log.warning("%s", plan.describe())
            as_root.apply(plan)
        for directory in (self.data_dir, self.socket_dir.parent):
            for made in _make_dirs(directory):
                made.chmod(made.stat().st_mode | stat.S_IXOTH)  # millpond's own

    def restart(self) -> None:
        """Start the cluster again after its postmaster died. Never ``initdb``: a cluster
        whose files are gone is an error, not something to replace with an empty one."""
        if not (self.pgdata / "PG_VERSION").exists():
            raise RuntimeError(f"the embedded Postgres cluster in {self.pgdata} is gone")
        if not self.is_running():
            self._launch()

    def stop(self) -> None:
        """Stop the cluster: a clean (fast) shutdown, and if that has not ended within
        60 s, an immediate one (crash recovery at the next start), as ``pg_ctlcluster
        --force`` does. A fast shutdown waits for every WAL sender to have sent, and its
        client to have confirmed, all of the WAL: a realtime stream far behind (big
        transactions on a loaded machine) can hold it up for long."""
        if not self.is_running():
            return
        try:
            self._pg_ctl("stop", "-w", "-t", str(_FAST_STOP_S), "-m", "fast")
        except RuntimeError as exc:
            if not self.is_running():
                return
            _log.warning(
                "Postgres did not stop within %s s (%s): stopping it at once",
                _FAST_STOP_S,
                str(exc).splitlines()[0],
            )
            self._pg_ctl("stop", "-w", "-t", "60", "-m", "immediate")

    def is_running(self) -> bool:
        return _lock_holder_alive(self.pgdata / "postmaster.pid")

    def url(self, database: str = "postgres") -> str:
        """A libpq URL for the superuser on ``database``."""
        password = quote(self.password_file.read_text().strip(), safe="")
        host = quote(str(self.socket_dir), safe="")
        return f"postgresql://{SUPERUSER}:{password}@/{quote(database)}?host={host}&port={PORT}"

    # -- steps ----------------------------------------------------------------------------

    def _initdb(self) -> None:
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)  # a half-made cluster from an interrupted initdb
        template = os.environ.get(TEMPLATE_ENV)
        if template and self._copy_template(Path(template)):
            return
        _log.info("initialising embedded Postgres in %s", self.pgdata)
        self.pgdata.mkdir(mode=0o700)
        password = secrets.token_urlsafe(32)
        _write_private(self.password_file, password + "\n")
        with tempfile.NamedTemporaryFile("w", dir=self.data_dir, delete=False) as pw:
            # its verifier, which Postgres keeps as it is: a random password needs no 4,096
            # PBKDF2 iterations, and every login of the server's would pay for them
            pw.write(scram.verifier(password) + "\n")
        pwfile = Path(pw.name)
        try:
            if self._run_as:
                _chown(self.pgdata, self._run_as)
                _chown(pwfile, self._run_as)
            self._run(
                str(bin_dir() / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if template:
            self._save_template(Path(template))

    def _copy_template(self, template: Path) -> bool:
        """A copy of the template cluster instead of an ``initdb`` (tests: 0.1 s, not 3)."""
        if not (template / "pg" / "PG_VERSION").exists():
            return False
        _log.info("copying the embedded Postgres template %s to %s", template, self.pgdata)
        shutil.copytree(template / "pg", self.pgdata)
        self.pgdata.chmod(0o700)
        _write_private(self.password_file, (template / "pg-password").read_text())
        if self._run_as:
            _chown_tree(self.pgdata, self._run_as)
        return True

    def _save_template(self, template: Path) -> None:
        """Keep this fresh cluster as the template (made whole elsewhere, then renamed
        into place: a process that starts meanwhile sees all of it or none)."""
        if (template / "pg" / "PG_VERSION").exists():
            return
        template.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=template.parent, prefix=".template-"))
        try:
            shutil.copytree(self.pgdata, staging / "pg")
            shutil.copy2(self.password_file, staging / "pg-password")
            staging.rename(template)
        except OSError:  # another process made it first
            shutil.rmtree(staging, ignore_errors=True)

    def _launch(self) -> None:
        # lock files left by a dead postmaster, maybe a zombie its parent (pg_ctl exited,
        # so init) has not reaped yet, which Postgres would take for a running one
        for lock in (self.pgdata / "postmaster.pid", self.socket_dir / _SOCKET_LOCK):
            if not _lock_holder_alive(lock):
                lock.unlink(missing_ok=True)
        self._prepare_socket_dir()
        self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file))

    def _write_conf(self) -> None:
        conf = self.pgdata / "millpond.conf"
        text = _CONF.format(socket_dir=self.socket_dir, port=PORT)
        if not conf.exists() or conf.read_text() != text:
            conf.write_text(text)
            if self._run_as:
                _chown(conf, self._run_as)
        main = self.pgdata / "postgresql.conf"
        include = "include = 'millpond.conf'\n"
        if include not in main.read_text():
            with main.open("a") as f:
                f.write("\n" + include)

    def _prepare_socket_dir(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._run_as:
            _chown(self.socket_dir, self._run_as)
        os.chmod(self.socket_dir, 0o700 if not self._run_as else 0o711)

    def _choose_socket_dir(self) -> Path:
        preferred = self.data_dir / "run"
        if len(str(preferred / f".s.PGSQL.{PORT}")) < 100:
            return preferred
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"millpond-{digest}"

    def _pg_ctl(self, *args: str) -> None:
        self._run(str(bin_dir() / "pg_ctl"), "-D", str(self.pgdata), *args)

    def _run(self, *cmd: str) -> None:
        kwargs: dict[str, object] = {}
        if self._run_as:
            # the group too: with root's gid, root-group directories' (often empty)
            # group bits would apply instead of the "other" bits we opened
            kwargs.update(user=self._run_as, group=self._run_as, extra_groups=[], cwd="/")
        result = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=False,
            **kwargs,  # type: ignore[call-overload]
        )
        if result.returncode != 0:
            log_tail = ""
            if self.log_file.exists():
                log_tail = "\n".join(self.log_file.read_text().splitlines()[-20:])
            raise RuntimeError(
                f"{Path(cmd[0]).name} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}\n{log_tail}"
            )


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _lock_holder_alive(lock: Path) -> bool:
    """Whether the process a Postgres lock file names (its first line) is alive."""
    try:
        pid = int(lock.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError, FileNotFoundError):
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed postmaster whose parent does not reap it still answers ``kill(pid, 0)``."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rpartition(")")[2].split()[:1] == ["Z"]


def adopt(pgdata: Path) -> None:
    """Make a cluster's files (a restored backup's) the embedded Postgres' user's."""
    if os.geteuid() != 0:
        return
    plan = as_root.plan(SYSTEM_USER, [])
    if plan.create_user:
        as_root.apply(plan)
    _chown_tree(pgdata, SYSTEM_USER)


def _chown_tree(root: Path, user: str) -> None:
    for path in [root, *root.rglob("*")]:
        _chown(path, user)


def _chown(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _make_dirs(path: Path) -> list[Path]:
    """``mkdir -p path``: the directories it made, from the top down."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))
