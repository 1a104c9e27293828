"""Running the embedded Postgres as root (``postgres/as_root.py``): what the Postgres user
lacks is listed, ``millpond up`` says it before it changes anything (and refuses when
MILLPOND_ALLOW_ROOT_SETUP=false), and what it changes is one ACL entry per directory —
never anyone else's rights, never the mode.

As root only: the Postgres user, ``useradd`` and running commands as that user need root
(CI runs as root)."""

from __future__ import annotations

import os
import pwd
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from _up import millpond_up
from _waiting import wait_until
from millpond.server.postgres import as_root
from millpond.server.postgres.embedded import SYSTEM_USER
from millpond.server.testing import free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the root-time setup needs root")

ACL = "system.posix_acl_access"


def _postgres_user() -> pwd.struct_passwd:
    plan = as_root.plan(SYSTEM_USER, [])
    if plan.create_user:
        as_root.apply(plan)
    return pwd.getpwnam(SYSTEM_USER)


def _reaches(user: str, path: Path) -> bool:
    """Whether ``user`` can stat ``path`` (traverse every directory above it)."""
    done = subprocess.run(
        ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "stat", str(path)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def _entries(path: Path) -> list[tuple[int, int, int]]:
    blob = os.getxattr(path, ACL)
    return [struct.unpack_from("<HHI", blob, at) for at in range(4, len(blob), 8)]


@pytest.fixture
def locked(tmp_path: Path) -> Path:
    """A 0700 directory (as a home directory is) with a file below a subdirectory."""
    top = tmp_path / "home"
    (top / "app").mkdir(parents=True)
    (top / "app" / "file").write_text("x")
    top.chmod(0o700)
    # the Postgres user reaches tmp_path (pytest's directories above it are 0700)
    as_root.apply(as_root.plan(SYSTEM_USER, [tmp_path]))
    return top


def test_a_grant_is_one_acl_entry_and_changes_no_one_elses_rights(locked: Path) -> None:
    user = _postgres_user()
    assert not _reaches(SYSTEM_USER, locked / "app" / "file")
    before = stat.S_IMODE(locked.stat().st_mode)
    as_root.grant_traverse(locked, user.pw_uid)
    assert _reaches(SYSTEM_USER, locked / "app" / "file")
    assert not _reaches("nobody", locked / "app" / "file")  # others: still nothing
    after = stat.S_IMODE(locked.stat().st_mode)
    assert after & 0o707 == before & 0o707  # owner's and others' bits as they were
    assert (2, 1, user.pw_uid) in _entries(locked)  # user:millpond-pg:--x
    as_root.grant_traverse(locked, user.pw_uid)  # again: the same single entry
    assert [e for e in _entries(locked) if e[0] == 2] == [(2, 1, user.pw_uid)]


def test_a_grant_keeps_the_acl_entries_already_there(locked: Path) -> None:
    user = _postgres_user()
    subprocess.run(["chmod", "0750", str(locked)], check=True)
    nobody = pwd.getpwnam("nobody").pw_uid
    # an existing entry user:nobody:r-x with its mask, set as setfacl would
    blob = struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", *e)
        for e in [
            (1, 7, 2**32 - 1),
            (2, 5, nobody),
            (4, 5, 2**32 - 1),
            (16, 5, 2**32 - 1),
            (32, 0, 2**32 - 1),
        ]
    )
    os.setxattr(locked, ACL, blob)
    as_root.grant_traverse(locked, user.pw_uid)
    entries = _entries(locked)
    assert (2, 5, nobody) in entries and (2, 1, user.pw_uid) in entries
    assert (4, 5, 2**32 - 1) in entries and (32, 0, 2**32 - 1) in entries  # group, other
    assert (16, 5, 2**32 - 1) in entries  # the mask already let x through: unchanged
    assert _reaches(SYSTEM_USER, locked / "app" / "file")


def test_an_acl_whose_mask_hides_x_is_left_to_the_admin(locked: Path) -> None:
    """Giving the entry effect would mean x in the mask, and with it x for the owning
    group that has it in its entry: millpond says so and changes nothing."""
    _postgres_user()
    subprocess.run(["chmod", "0750", str(locked)], check=True)
    # group::r-x masked to r-- (as `setfacl -m m::r--` leaves it): the group cannot traverse
    blob = struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", *e)
        for e in [(1, 7, 2**32 - 1), (4, 5, 2**32 - 1), (16, 4, 2**32 - 1), (32, 0, 2**32 - 1)]
    )
    os.setxattr(locked, ACL, blob)
    plan = as_root.plan(SYSTEM_USER, [locked / "app"])
    assert plan.grants == [] and [path for path, _ in plan.manual] == [locked]
    assert "mask" in plan.describe() and f"setfacl -m u:{SYSTEM_USER}:x {locked}" in plan.describe()
    with pytest.raises(as_root.RootSetupRefused):
        as_root.apply(plan)
    assert os.getxattr(locked, ACL) == blob  # unchanged


def test_the_plan_lists_exactly_what_the_user_cannot_traverse(locked: Path) -> None:
    user = _postgres_user()
    open_dir = locked.parent / "open"
    open_dir.mkdir(mode=0o755)
    plan = as_root.plan(SYSTEM_USER, [locked / "app" / "data", open_dir / "data"])
    assert plan.grants == [locked] and not plan.create_user and plan.manual == []
    assert f"let {SYSTEM_USER} traverse {locked}" in plan.describe()
    as_root.apply(plan)
    assert as_root.plan(SYSTEM_USER, [locked / "app" / "data"]).changes is False
    assert as_root.plan("millpond-no-such-user", [open_dir]).create_user
    del user


def _up(data_dir: Path, *args: str, allow: str | None) -> subprocess.Popen[str]:
    """``millpond up`` with MILLPOND_ALLOW_ROOT_SETUP as ``allow`` says (None: unset)."""
    env = {} if allow is None else {"MILLPOND_ALLOW_ROOT_SETUP": allow}
    return millpond_up(data_dir, free_port(), *args, env=env, drop=("MILLPOND_ALLOW_ROOT_SETUP",))


def test_millpond_up_as_root_refused_says_what_it_would_change(locked: Path) -> None:
    _postgres_user()
    data_dir = locked / "app" / "data"
    for allow in ("false", "0"):
        proc = _up(data_dir, allow=allow)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 2, out
        assert f"let {SYSTEM_USER} traverse {locked}" in out
        assert "MILLPOND_ALLOW_ROOT_SETUP is false: unset it" in out
        with pytest.raises(OSError):
            os.getxattr(locked, ACL)  # nothing changed
        assert stat.S_IMODE(locked.stat().st_mode) == 0o700
        assert not data_dir.exists()


def test_millpond_up_as_root_says_it_then_does_only_that(locked: Path) -> None:
    """By default (MILLPOND_ALLOW_ROOT_SETUP unset)."""
    user = _postgres_user()
    data_dir = locked / "app" / "data"
    proc = _up(data_dir, allow=None)
    try:
        wait_until(
            lambda: (data_dir / "admin-key").exists() or proc.poll() is not None,
            timeout=60,
            what="the server to start",
        )
        assert proc.poll() is None
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    # the plan is said (logged) before the first change is made
    said = out.index(f"let {SYSTEM_USER} traverse {locked} (an ACL entry")
    assert said < out.index(f"running as root: letting {SYSTEM_USER} traverse {locked}")
    assert stat.S_IMODE(locked.stat().st_mode) & 0o707 == 0o700  # no one else's rights
    assert (2, 1, user.pw_uid) in _entries(locked)
    assert not _reaches("nobody", data_dir)
