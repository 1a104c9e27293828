"""What running the embedded Postgres as root changes on the machine, said before it is
done and done only when allowed.

Postgres refuses to run as root, so millpond runs it as the system user ``millpond-pg``.
That user must exist, and it must be able to traverse (not list) every directory on the
way to the data directory, the socket directory and the Postgres binaries. A
:class:`RootPlan` lists what is missing; :func:`apply` makes it so:

- the user is created with ``useradd --system`` (no home, no login shell);
- a directory millpond-pg cannot traverse gets an ACL entry ``user:millpond-pg:--x``:
  the directory's owner, group and other users keep exactly the rights they had (its
  mode bits are not touched). Where the file system has no ACLs, nothing is changed:
  the plan says so and what to do instead.

``millpond up`` logs the plan before it changes anything; with
``MILLPOND_ALLOW_ROOT_SETUP=false`` it prints the plan and refuses instead.
"""

from __future__ import annotations

import errno
import logging
import os
import pwd
import stat
import struct
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_log = logging.getLogger("millpond.postgres")

_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_UNDEFINED_ID = 0xFFFFFFFF
_X = 1


HOW_TO_ALLOW = (
    "MILLPOND_ALLOW_ROOT_SETUP is false: unset it to let millpond do this, or run millpond"
    " as a user other than root."
)


class RootSetupRefused(RuntimeError):
    """Running as root needs changes to the machine that were not allowed."""


@dataclass
class RootPlan:
    user: str
    create_user: bool
    grants: list[Path] = field(default_factory=list)
    """Directories to give the user traverse on (ACL entries)."""
    manual: list[tuple[Path, str]] = field(default_factory=list)
    """Directories it cannot traverse that millpond will not change, and why: left to
    the admin (a file system without ACLs; an ACL whose mask would let others in too)."""

    @property
    def changes(self) -> bool:
        return self.create_user or bool(self.grants)

    def describe(self) -> str:
        lines = [
            "running as root: Postgres refuses to, so millpond runs the embedded Postgres as"
            f" the system user {self.user}. For that, it"
            + (" will:" if self.changes else " needs:")
        ]
        if self.create_user:
            lines.append(f"  - create the system user {self.user} (useradd --system, no home,")
            lines.append("    no login shell)")
        for path in self.grants:
            lines.append(f"  - let {self.user} traverse {path} (an ACL entry user:{self.user}:--x;")
            lines.append("    the directory's mode and everyone else's rights stay as they are)")
        for path, why in self.manual:
            lines.append(f"  - (cannot: {why}) {self.user} cannot traverse {path}:")
            lines.append(
                f"    run `setfacl -m u:{self.user}:x {path}` or `chmod o+x {path}` yourself,"
            )
            lines.append("    or choose a data directory under a path others can traverse")
        return "\n".join(lines)


def plan(user: str, paths: Iterable[Path]) -> RootPlan:
    """What ``user`` lacks to reach each of ``paths`` (directories, existing or not: the
    ones still missing are made by millpond, for the user)."""
    try:
        entry: pwd.struct_passwd | None = pwd.getpwnam(user)
    except KeyError:
        entry = None
    result = RootPlan(user, create_user=entry is None)
    seen: set[Path] = set()
    for path in paths:
        for directory in _existing_ancestors(path):
            if directory in seen:
                continue
            seen.add(directory)
            supported, acl = _acl(directory)
            if _can_traverse(directory, acl, entry):
                continue
            if not supported:
                result.manual.append((directory, "its file system has no ACLs"))
            elif _mask_hides_x(acl, entry):
                result.manual.append(
                    (
                        directory,
                        "its ACL mask hides x from entries that have it: adding the"
                        " entry would let them in too",
                    )
                )
            else:
                result.grants.append(directory)
    return result


def apply(root_plan: RootPlan) -> None:
    """Make the plan so (as root). Raises when a directory cannot be given an ACL."""
    if root_plan.manual:
        raise RootSetupRefused(root_plan.describe())
    if root_plan.create_user:
        _log.warning("running as root: creating the system user %s", root_plan.user)
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                root_plan.user,
            ],
            check=True,
            capture_output=True,
        )
    uid = pwd.getpwnam(root_plan.user).pw_uid
    for directory in root_plan.grants:
        _log.warning(
            "running as root: letting %s traverse %s (ACL user:%s:--x)",
            root_plan.user,
            directory,
            root_plan.user,
        )
        grant_traverse(directory, uid)


# -- ACLs -----------------------------------------------------------------------------------


def grant_traverse(directory: Path, uid: int) -> None:
    """Add ``user:<uid>:--x`` to the directory's access ACL, keeping every other entry.
    The mask gains x where the entry needs it, which changes no other entry's rights as
    long as none of them has an x the mask hid (:func:`plan` leaves those to the admin)."""
    mode = directory.stat().st_mode
    entries = _read_acl(directory) or _acl_from_mode(mode)
    users = {ident: perm for tag, perm, ident in entries if tag == _USER}
    users[uid] = users.get(uid, 0) | _X
    group_obj = next(perm for tag, perm, _ in entries if tag == _GROUP_OBJ)
    groups = [(perm, ident) for tag, perm, ident in entries if tag == _GROUP]
    old_mask = _mask(entries)
    # without a mask before, the group class' rights were the owning group's
    mask = (old_mask if old_mask is not None else group_obj) | _X
    rebuilt = [(_USER_OBJ, _perm(entries, _USER_OBJ), _UNDEFINED_ID)]
    rebuilt += [(_USER, perm, ident) for ident, perm in sorted(users.items())]
    rebuilt.append((_GROUP_OBJ, group_obj, _UNDEFINED_ID))
    rebuilt += [(_GROUP, perm, ident) for perm, ident in sorted(groups, key=lambda g: g[1])]
    rebuilt.append((_MASK, mask, _UNDEFINED_ID))
    rebuilt.append((_OTHER, _perm(entries, _OTHER), _UNDEFINED_ID))
    blob = struct.pack("<I", _ACL_VERSION) + b"".join(struct.pack("<HHI", *e) for e in rebuilt)
    os.setxattr(directory, _ACL_XATTR, blob)


def _mask_hides_x(
    entries: list[tuple[int, int, int]] | None, user: pwd.struct_passwd | None
) -> bool:
    """Whether the ACL's mask lacks x while another group-class entry has it: the mask
    would have to grow, and those entries would gain x with it."""
    if not entries:
        return False
    mask = _mask(entries)
    if mask is None or mask & _X:
        return False
    uid = user.pw_uid if user is not None else None
    return any(
        perm & _X
        for tag, perm, ident in entries
        if tag in (_GROUP_OBJ, _GROUP) or (tag == _USER and ident != uid)
    )


def _perm(entries: list[tuple[int, int, int]], tag: int) -> int:
    return next(perm for t, perm, _ in entries if t == tag)


def _mask(entries: list[tuple[int, int, int]]) -> int | None:
    return next((perm for tag, perm, _ in entries if tag == _MASK), None)


def _acl(directory: Path) -> tuple[bool, list[tuple[int, int, int]] | None]:
    """Whether the directory's file system keeps ACLs, and its access ACL's entries
    (None: it has none beyond its mode)."""
    try:
        blob = os.getxattr(directory, _ACL_XATTR)
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return True, None
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return False, None
        raise
    if len(blob) < 4 or struct.unpack_from("<I", blob)[0] != _ACL_VERSION:
        return True, None
    return True, [struct.unpack_from("<HHI", blob, at) for at in range(4, len(blob) - 7, 8)]


def _read_acl(directory: Path) -> list[tuple[int, int, int]] | None:
    return _acl(directory)[1]


def _acl_from_mode(mode: int) -> list[tuple[int, int, int]]:
    return [
        (_USER_OBJ, (mode >> 6) & 7, _UNDEFINED_ID),
        (_GROUP_OBJ, (mode >> 3) & 7, _UNDEFINED_ID),
        (_OTHER, mode & 7, _UNDEFINED_ID),
    ]


# -- who can reach what --------------------------------------------------------------------


def _existing_ancestors(path: Path) -> list[Path]:
    """The directories on the way to ``path`` that exist (a missing tail is millpond's to
    make), from the root down, ``path`` included when it exists."""
    path = path.absolute()
    chain = [path, *path.parents]
    return [p for p in reversed(chain) if p.is_dir()]


def _can_traverse(
    directory: Path, acl: list[tuple[int, int, int]] | None, user: pwd.struct_passwd | None
) -> bool:
    """Whether ``user`` (None: a user still to create, in no group) may search it, by
    its mode and ``acl`` (its entries)."""
    info = directory.stat()
    if user is not None and info.st_uid == user.pw_uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if user is not None and acl is not None:
        found = _mask(acl)
        mask = 7 if found is None else found
        for tag, perm, ident in acl:
            if tag == _USER and ident == user.pw_uid:
                return bool(perm & mask & _X)
    if user is not None and info.st_gid == user.pw_gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)
