"""The layers that confine a module worker, each detected and reported, none skipped
silently.

The server starts each worker as a fresh interpreter (``python -I``, never a fork of the
server) with a scrubbed environment (:func:`child_env`). The worker opens its Postgres
connection, then calls :func:`apply`, which in this order:

* ``network``: enters an empty network namespace (``unshare(CLONE_NEWNET)``: no interface
  but a down loopback, so no connection can be made; the Postgres socket opened before
  keeps working);
* ``filesystem``: enters a private mount namespace where every mount is read-only except
  the worker's scratch directory (bind-mounted on itself), so ``/tmp``, ``/var/tmp``,
  ``/dev/shm`` and every other world-writable place are closed too; the directories of
  ``limits["hidden"]`` (the server's data directory) are covered by an empty tmpfs;
* ``rlimits``: ``RLIMIT_AS`` (memory), ``RLIMIT_CPU`` (raised to used + the per-call
  budget before each call: :func:`set_cpu_budget`), ``RLIMIT_NOFILE``, ``RLIMIT_FSIZE``,
  ``RLIMIT_NPROC``, ``RLIMIT_CORE`` = 0; hard limits equal soft ones except the CPU's, which
  the wall-clock timeout of the server backs up;
* ``user``: becomes the system user ``millpond-module`` (no groups) when running as root;
* ``no_new_privs``: ``prctl(PR_SET_NO_NEW_PRIVS)``, so nothing it executes gains privileges;
* ``workdir``: works in its scratch directory (owned by the worker's user, umask 077).

The first two need root (CAP_SYS_ADMIN); without it they are reported inactive and the
worker runs as the server's user, with what the OS lets that user write.

Not enforced: reading world-readable files (the mounts are read-only, not hidden; only
``hidden`` directories and the parents of the Python installation are covered), seeing
other processes in ``/proc`` (no PID namespace), system calls (no seccomp filter). A
module can ignore SIGXCPU; the server's wall-clock timeout (which kills the worker and its
process group) is the bound that holds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import os
import pwd
import re
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

SYSTEM_USER = "millpond-module"

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
_MOUNT_FLAGS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME,
}

MAX_OPEN_FILES = 64
MAX_FILE_MB = 64
MAX_PROCESSES = 512
"""``RLIMIT_NPROC`` counts every process of the worker user (all workers share it): this
bounds a fork bomb, not one worker's children."""


@dataclasses.dataclass(frozen=True)
class Layer:
    """One confinement layer: whether it is active, and how (or why not)."""

    name: str
    active: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- the server's side ------------------------------------------------------------------


def child_env(scratch: Path) -> dict[str, str]:
    """The whole environment of a worker: nothing of the server's (no ``MILLPOND_*``, no
    root's ``HOME``)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(scratch),
        "TMPDIR": str(scratch),
    }


def ensure_user() -> str | None:
    """When running as root, create the worker user if missing; None when it exists (or
    is not needed), else why it could not be made."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
        return None
    except KeyError:
        pass
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 and "already exists" not in result.stderr:
        return f"useradd {SYSTEM_USER} failed: {result.stderr.strip()}"
    return None


# -- the worker's side ------------------------------------------------------------------


def apply(scratch: Path, limits: dict[str, Any]) -> list[Layer]:
    """Confine this process (a worker, after it connected to Postgres); what applied."""
    root = os.geteuid() == 0
    user = _user_entry() if root else None
    if user is not None:
        os.chown(scratch, user.pw_uid, user.pw_gid)
    layers = [
        Layer(
            "interpreter",
            bool(sys.flags.isolated) and not any(k.startswith("MILLPOND") for k in os.environ),
            "a fresh `python -I`, environment scrubbed (PATH, LANG, HOME and TMPDIR only)",
        ),
        _network(root),
        _filesystem(root, scratch, limits),
        _rlimits(limits),
        _drop_user(root, user),
        _no_new_privs(),
        _workdir(scratch),
    ]
    return layers


def set_cpu_budget(seconds: int) -> None:
    """Let the next call use ``seconds`` of CPU from now (SIGXCPU past it)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _call(name: str, *args: Any) -> None:
    function = getattr(_libc(), name)
    if function(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}: {os.strerror(errno)}")


def _network(root: bool) -> Layer:
    if not root:
        return Layer("network", False, "needs root (CAP_SYS_ADMIN) for unshare(CLONE_NEWNET)")
    try:
        _call("unshare", CLONE_NEWNET)
    except OSError as exc:
        return Layer("network", False, f"unshare(CLONE_NEWNET) failed: {exc}")
    return Layer("network", True, "an empty network namespace: no connection can be made")


def _filesystem(root: bool, scratch: Path, limits: dict[str, Any]) -> Layer:
    if not root:
        return Layer(
            "filesystem",
            False,
            "needs root for a mount namespace: the worker may write wherever the server's user may",
        )
    try:
        _call("unshare", CLONE_NEWNS)
        _mount(None, "/", MS_REC | MS_PRIVATE)
        _mount(str(scratch), str(scratch), MS_BIND)
    except OSError as exc:
        return Layer("filesystem", False, f"no private mount namespace: {exc}")
    try:
        exposed = _expose(sys.path)
        hidden = _hide([str(p) for p in limits.get("hidden", ())], scratch)
    except OSError as exc:
        return Layer("filesystem", False, f"could not arrange the mounts: {exc}")
    failed = []
    for target, options in _mounts():
        if target == str(scratch):
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        flags |= sum(bit for option, bit in _MOUNT_FLAGS.items() if option in options)
        try:
            _mount(None, target, flags)
        except OSError as exc:
            failed.append(f"{target} ({exc.strerror})")
    if failed:
        return Layer("filesystem", False, "could not make read-only: " + ", ".join(failed))
    detail = "every mount read-only but the scratch directory"
    if exposed:
        detail += f"; {', '.join(exposed)} hidden but for the Python installation"
    if hidden:
        detail += f"; {', '.join(hidden)} hidden"
    return Layer("filesystem", True, detail)


def _hide(paths: list[str], scratch: Path) -> list[str]:
    """Cover each directory of ``paths`` (the server's data directory...) with an empty
    tmpfs; not one that holds the scratch directory or the Python installation."""
    keep = [os.path.realpath(p) for p in [str(scratch), *sys.path] if p]
    hidden = []
    for path in sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)}):
        if any(k == path or k.startswith(path + "/") for k in keep):
            continue
        flags = ctypes.c_ulong(MS_NOSUID | MS_NODEV | MS_NOEXEC)
        _call("mount", b"tmpfs", path.encode(), b"tmpfs", flags, b"mode=0000,size=4k")
        hidden.append(path)
    return hidden


def _expose(paths: list[str]) -> list[str]:
    """Make the directories of ``sys.path`` reachable by the worker's user when a parent
    is not (a pyenv Python under ``/root``): a tmpfs covers that parent, holding bind mounts
    of just these directories; everything else in it is hidden. The covered parents."""
    covered: dict[str, list[str]] = {}
    for path in sorted({os.path.realpath(p) for p in paths if p and os.path.isdir(p)}):
        blocked = _blocked_parent(path)
        inside = covered.setdefault(blocked, []) if blocked else None
        if inside is not None and not any(path.startswith(p + "/") for p in inside):
            inside.append(path)
    for parent, inside in covered.items():
        handles = [os.open(p, os.O_PATH | os.O_DIRECTORY) for p in inside]
        try:
            _call(
                "mount",
                b"tmpfs",
                parent.encode(),
                b"tmpfs",
                ctypes.c_ulong(MS_NOSUID | MS_NODEV),
                b"mode=0755,size=1m",
            )
            for path, handle in zip(inside, handles, strict=True):
                os.makedirs(path, mode=0o755, exist_ok=True)
                _mount(f"/proc/self/fd/{handle}", path, MS_BIND | MS_REC)
        finally:
            for handle in handles:
                os.close(handle)
    return sorted(covered)


def _blocked_parent(path: str) -> str | None:
    """The topmost parent of ``path`` others cannot traverse, if any."""
    parts = Path(path).parts
    for depth in range(2, len(parts)):
        parent = os.path.join(*parts[:depth])
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return parent
    return None


def _mount(source: str | None, target: str, flags: int) -> None:
    encoded = source.encode() if source is not None else None
    _call("mount", encoded, target.encode(), None, ctypes.c_ulong(flags), None)


def _mounts() -> list[tuple[str, set[str]]]:
    """(mount point, its per-mount options) of each mount, from /proc/self/mountinfo."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        target = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])  # \040
        mounts.append((target, set(fields[5].split(","))))
    return mounts


def _rlimits(limits: dict[str, Any]) -> Layer:
    memory = int(limits.get("memory_mb", 512)) * 1024 * 1024
    cpu = int(limits.get("cpu_s", 5))
    wanted = {
        "AS": (resource.RLIMIT_AS, memory),
        "NOFILE": (resource.RLIMIT_NOFILE, MAX_OPEN_FILES),
        "FSIZE": (resource.RLIMIT_FSIZE, MAX_FILE_MB * 1024 * 1024),
        "NPROC": (resource.RLIMIT_NPROC, MAX_PROCESSES),
        "CORE": (resource.RLIMIT_CORE, 0),
    }
    failed = []
    for name, (which, value) in wanted.items():
        try:
            resource.setrlimit(which, (value, value))
        except (OSError, ValueError) as exc:
            failed.append(f"{name} ({exc})")
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, resource.RLIM_INFINITY))
        set_cpu_budget(cpu)
    except (OSError, ValueError) as exc:
        failed.append(f"CPU ({exc})")
    detail = (
        f"memory {memory // 2**20} MB, CPU {cpu} s per call, {MAX_OPEN_FILES} open files, "
        f"files up to {MAX_FILE_MB} MB, {MAX_PROCESSES} processes, no core dumps"
    )
    if failed:
        return Layer("rlimits", False, "could not set " + ", ".join(failed))
    return Layer("rlimits", True, detail)


def _user_entry() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        return None


def _drop_user(root: bool, user: pwd.struct_passwd | None) -> Layer:
    if not root:
        return Layer("user", False, f"not root: runs as the server's user (uid {os.getuid()})")
    if user is None:
        return Layer("user", False, f"the system user {SYSTEM_USER} is missing")
    try:
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    except OSError as exc:
        return Layer("user", False, f"could not become {SYSTEM_USER}: {exc}")
    return Layer("user", True, f"{SYSTEM_USER} (uid {user.pw_uid}), no supplementary groups")


def _no_new_privs() -> Layer:
    try:
        _call("prctl", PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), 0, 0, 0)
        # killed with the server (set after setuid, which clears it)
        _call("prctl", PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), 0, 0, 0)
    except OSError as exc:
        return Layer("no_new_privs", False, f"prctl(PR_SET_NO_NEW_PRIVS) failed: {exc}")
    return Layer(
        "no_new_privs", True, "no privileges gained through exec; killed when the server ends"
    )


def _workdir(scratch: Path) -> Layer:
    os.chdir(scratch)
    os.umask(0o077)
    writable = os.access(scratch, os.W_OK)
    return Layer("workdir", writable, f"scratch directory {scratch} (umask 077)")
