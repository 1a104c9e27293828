"""The module tests/modules/test_worker.py publishes to its workers (read as source,
not imported by the tests): ordinary reducers, and hostile ones."""

import os
import socket
import time

from millpond.module import (
    Identity,
    ReducerContext,
    SenderError,
    Timestamp,
    index,
    primary_key,
    reducer,
    table,
)

from .helpers import double

ATTEMPTS: dict[int, list[list[object]]] = {}


@table(public=True)
class Account:
    id: int = primary_key()
    balance: int
    tag: str = index("")


@table
class Entry:
    id: int = primary_key(auto_inc=True)
    account: int
    sent: Timestamp
    sender: Identity
    lucky: float


@reducer
def open_account(ctx: ReducerContext, id: int, balance: int, tag: str = "") -> Account:
    return ctx.db.account.insert(Account(id=id, balance=balance, tag=tag))


@reducer
def deposit(ctx: ReducerContext, id: int, amount: int) -> dict:
    account = ctx.db.account.find(id)
    if account is None:
        raise SenderError(f"no account {id}")
    account.balance += double(amount) // 2
    ctx.db.account.update(account)
    entry = ctx.db.entry.insert(
        Entry(account=id, sent=ctx.timestamp, sender=ctx.sender, lucky=ctx.rng.random())
    )
    ctx.log.info("deposited %s", amount)
    print("printed", amount)
    return {"balance": account.balance, "entry": entry.id}


@reducer
def refuse(ctx: ReducerContext, id: int) -> None:
    ctx.db.account.insert(Account(id=id, balance=0))
    raise SenderError("refused: not today")


@reducer
def buggy(ctx: ReducerContext, id: int) -> None:
    ctx.db.account.insert(Account(id=id, balance=0))
    {}["missing"]


@reducer(private=True)
def hidden(ctx: ReducerContext, id: int) -> None:
    ctx.db.account.insert(Account(id=id, balance=0))


@reducer
def contended(ctx: ReducerContext, id: int) -> list:
    ATTEMPTS.setdefault(id, []).append([ctx.timestamp.isoformat(), ctx.rng.random()])
    account = ctx.db.account.find(id)
    ctx.sql("SELECT pg_advisory_xact_lock(%s)", [id])
    account.balance += 1
    ctx.db.account.update(account)
    return ATTEMPTS[id]


@reducer
def gated(ctx: ReducerContext, id: int) -> None:
    ctx.sql("SELECT pg_advisory_xact_lock(%s)", [id])
    ctx.db.account.insert(Account(id=id, balance=1))


@reducer
def tables(ctx: ReducerContext, base: int) -> dict:
    for i in range(3):
        ctx.db.account.insert(Account(id=base + i, balance=i, tag=f"t{base}"))
    tagged = ctx.db.account.filter_by(tag=f"t{base}")
    gone = ctx.db.account.delete(tagged[0])
    again = ctx.db.account.delete(tagged[0])
    try:
        ctx.db.account.update(Account(id=base + 99, balance=0))
        missing = "updated"
    except LookupError as exc:
        missing = str(exc)
    mine = [a.id for a in ctx.db.account if a.tag == f"t{base}"]
    return {
        "tagged": [a.id for a in tagged],
        "deleted": [gone, again],
        "after": mine,
        "count": ctx.db.account.count() >= 2,
        "none": ctx.db.account.find(base + 99),
        "missing": missing,
        "sql": ctx.sql("SELECT count(*) AS n FROM account WHERE tag = %(t)s", {"t": f"t{base}"}),
    }


@reducer
def whoami(ctx: ReducerContext) -> dict:
    row = ctx.sql(
        "SELECT current_user AS role, r.rolsuper AS superuser, "
        "current_setting('millpond.sender') AS sender, "
        "current_setting('millpond.request_id') AS request_id "
        "FROM pg_roles r WHERE r.rolname = current_user"
    )[0]
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "env": sorted(os.environ),
        "cwd": os.getcwd(),
        **row,
    }


@reducer
def dial(ctx: ReducerContext, port: int) -> str:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except OSError as exc:
        return f"refused: {exc}"
    return "connected"


@reducer
def write_file(ctx: ReducerContext, path: str) -> str:
    try:
        with open(path, "w") as f:
            f.write("x")
    except OSError as exc:
        return f"refused: {exc}"
    return "written"


@reducer
def read_file(ctx: ReducerContext, path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        return f"refused: {exc}"


@reducer
def spin(ctx: ReducerContext) -> None:
    while True:
        pass


@reducer
def hang(ctx: ReducerContext) -> None:
    time.sleep(3600)


@reducer
def bomb(ctx: ReducerContext) -> None:
    hog = []
    while True:
        hog.append(bytearray(32 * 2**20))


@reducer
def leave(ctx: ReducerContext) -> None:
    os._exit(1)


@reducer
def segfault(ctx: ReducerContext) -> None:
    import ctypes

    ctypes.string_at(0)
