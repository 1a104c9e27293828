"""Regenerate the screenshots in docs/console.md from a seeded demo.

``python scripts/console_screenshots.py`` starts a server in a temporary directory (its
own embedded Postgres, free ports), seeds it (:func:`seed`: a user with a shop
database, a collaborator, keys and flags), opens every page of :data:`PAGES` in
headless Chromium (Debian's, ``/usr/bin/chromium``) and writes
``docs/console/<name>.png`` (light; ``--dark`` adds ``<name>-dark.png``).

tests/console/test_screenshots.py seeds the test session's server the same way and
fails when a page of :data:`PAGES` no longer renders, or when docs/console.md does not
show one of them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "console"
CHROMIUM = "/usr/bin/chromium"
UPLOAD = (
    b"sku,title,price,in_stock,added\n"
    b"A-1,Desk lamp,19.90,true,2026-10-01\nA-2,Oak desk,240,false,2026-10-03\n"
)


MODULE = '''
from millpond.module import ReducerContext, SenderError, reducer, table, primary_key


@table(public=True)
class Stock:
    sku: str = primary_key()
    count: int = 0


@reducer
def restock(ctx: ReducerContext, sku: str, count: int = 1) -> int:
    """Add ``count`` items of ``sku`` to the stock."""
    if count < 1:
        raise SenderError("restock at least one")
    row = ctx.db.stock.find(sku) or ctx.db.stock.insert(Stock(sku=sku))
    row.count += count
    print("restocked", sku, "to", row.count)
    return ctx.db.stock.update(row).count
'''
"""The demo's module: one table, one reducer."""


@dataclass(frozen=True)
class Shot:
    name: str
    path: str
    """The page, ``{db}`` and ``{env}`` filled in from the demo."""
    ready: str
    """A selector that is on the page once it has rendered."""
    sql: str = ""
    """For the SQL editor: run this first."""
    upload: bool = False
    """For the import page: preview :data:`UPLOAD` first."""
    click: str = ""
    """A button to press first (the realtime inspector's Subscribe)."""


PAGES = [
    Shot("login", "/console/login", "input[name=api_key]"),
    Shot("databases", "/console/databases", "tr[data-database]"),
    Shot("database", "/console/databases/{db}", "#connect"),
    Shot(
        "sql",
        "/console/databases/{db}/sql",
        "table.results",
        "SELECT id, name, price, tags, added FROM products ORDER BY id",
    ),
    Shot(
        "sql-error", "/console/databases/{db}/sql", ".sql-error", "SELECT lower(id) FROM products"
    ),
    Shot("tables", "/console/databases/{db}/tables", "tr[data-table]"),
    Shot("table", "/console/databases/{db}/tables/public/products", "table.results"),
    Shot("import", "/console/databases/{db}/import", "[data-preview-result]", upload=True),
    Shot("job", "/console/jobs/export/{job}", "[data-state=DONE]"),
    Shot(
        "realtime",
        "/console/databases/{db}/realtime",
        "[data-live-status]:has-text('Live:')",
        click="button[name=subscribe]",
    ),
    Shot("module", "/console/databases/{db}/module", "form[data-reducer]"),
    Shot("keys", "/console/keys", "tr[data-key]"),
    Shot("flags", "/console/flags?env={env}", "tr[data-flag]"),
    Shot("flag", "/console/flags/new-checkout?env={env}", "form[action*='/save']"),
    Shot("features", "/console/features?env={env}", "tr[data-feature]"),
    Shot("plan", "/console/plans/pro?env={env}", "tr[data-feature]"),
    Shot("audit", "/console/audit?env={env}", "tr.audit-entry"),
]


@dataclass(frozen=True)
class Demo:
    base_url: str
    username: str
    key: str
    database: str
    env: str
    job: str
    """A finished export"""

    def url(self, shot: Shot) -> str:
        return self.base_url + shot.path.format(db=self.database, env=self.env, job=self.job)


def seed(base_url: str, admin_key: str, username: str = "demo") -> Demo:
    """A user ``username`` with a shop database (products, a collaborator), two more
    keys, and a flags environment with flags and rules."""
    with httpx.Client(base_url=base_url, timeout=30) as http:

        def call(method: str, path: str, key: str, **kw: Any) -> Any:
            r = http.request(method, "/v1" + path, headers={"Authorization": f"Bearer {key}"}, **kw)
            r.raise_for_status()
            return r.json() if r.content else None

        made = call("POST", "/users", admin_key, json={"username": username})
        key = made["api_key"]["secret"]
        friend = call("POST", "/users", admin_key, json={"username": f"{username}-ana"})
        db = call(
            "POST", "/databases", key, json={"name": "shop", "storage_limit_bytes": 200 << 20}
        )["full_name"]
        call("POST", "/databases", key, json={"name": "analytics", "is_private": False})
        call(
            "POST",
            "/query",
            key,
            json={
                "database": db,
                "sql": "CREATE TABLE products (id bigint PRIMARY KEY, name text NOT NULL,"
                " price numeric(10, 2), tags text[], added date);"
                " INSERT INTO products VALUES"
                " (1, 'Desk lamp', 19.90, '{home,light}', '2026-10-01'),"
                " (2, 'Oak desk', 240, '{home,office}', '2026-10-03'),"
                " (3, 'Notebook', 3.50, '{office}', NULL),"
                " (4, 'Headphones', 89, '{audio}', '2026-11-20')",
            },
        )
        friend_name = friend["user"]["username"]
        call("PUT", f"/databases/{db}/collaborators/{friend_name}", key, json={"role": "read"})
        call("POST", "/keys", key, json={"name": "ci", "scope": "read"})
        call("POST", "/keys", key, json={"name": "backend", "expires_in_seconds": 90 * 86400})
        env = call("POST", "/flags/environments", key, json={"name": "production"})["id"]
        flags = f"/flags/environments/{env}/flags"
        call("POST", flags, key, json={"key": "new-checkout", "name": "New checkout"})
        call("POST", flags, key, json={"key": "dark-mode", "default_value": True})
        call("POST", flags, key, json={"key": "beta-reports", "name": "Beta reports"})
        call(
            "PUT",
            f"{flags}/new-checkout/rules",
            key,
            json={
                "rules": [
                    {
                        "id": "console-rollout",
                        "value": True,
                        "conditions": [
                            {
                                "condition_type": "rollout",
                                "actor_entity": "user",
                                "actor_key": "id",
                                "percentage": 25,
                            }
                        ],
                    }
                ]
            },
        )
        catalog(call, key, f"/flags/environments/{env}")
        call("POST", f"/databases/{db}/module", key, json={"files": {"shop.py": MODULE}})
        call("POST", f"/databases/{db}/call/restock", key, json={"sku": "A-1", "count": 3})
        export = call("POST", "/exports", key, json={"db_name": db, "table_name": "products"})
        for _ in range(600):  # (a tenth of a second each: a minute at most)
            if call("GET", f"/exports/{export['id']}", key)["state"] in ("DONE", "FAILED"):
                break
            time.sleep(0.1)
    return Demo(base_url, username, key, db, env, export["id"])


def catalog(call: Any, key: str, base: str) -> None:
    """The demo environment's features and plans: beta-reports gates a metered feature."""
    reports = {"id": "reports", "name": "Reports", "feature_type": "event", "event_name": "report"}
    call("POST", f"{base}/features", key, json=reports)
    seats = {"id": "seats", "name": "Seats", "feature_type": "trait", "trait_key": "seats"}
    call("POST", f"{base}/features", key, json=seats)
    call("PATCH", f"{base}/flags/beta-reports", key, json={"feature_id": "reports"})
    for plan, name, runs in (("free", "Free", 5), ("pro", "Pro", 100)):
        call("POST", f"{base}/plans", key, json={"id": plan, "name": name})
        grant = {"plan_id": plan, "feature_id": "reports", "value_type": "numeric"}
        monthly = {"value_numeric": runs, "metric_period": "current_month"}
        call("POST", f"{base}/entitlements", key, json={**grant, **monthly})
    grant = {"plan_id": "pro", "feature_id": "seats", "value_type": "trait"}
    call("POST", f"{base}/entitlements", key, json={**grant, "value_trait_key": "max_seats"})


def login(page: Any, demo: Demo) -> None:
    page.goto(f"{demo.base_url}/console/login")
    page.fill("input[name=api_key]", demo.key)
    with page.expect_navigation():
        page.click("button:has-text('Log in')")


def open_shot(page: Any, demo: Demo, shot: Shot) -> None:
    """Open ``shot``'s page as the demo user, logged in (except on the login page)."""
    page.goto(demo.url(shot))
    if shot.upload:
        page.fill("input[name=table_name]", "catalog")
        page.set_input_files(
            "input[name=file]", {"name": "catalog.csv", "mimeType": "text/csv", "buffer": UPLOAD}
        )
        page.click("button[name=preview]")
    if shot.click:
        page.click(shot.click)
    if shot.sql:
        page.fill("textarea[name=sql]", shot.sql)
        with page.expect_navigation():
            page.click("button[name=run]")
    page.wait_for_selector(shot.ready)
    page.wait_for_load_state()


def shoot(demo: Demo, out: Path, dark: bool) -> list[Path]:
    from playwright.sync_api import sync_playwright

    written = []
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        for scheme in ("light", "dark") if dark else ("light",):
            context = browser.new_context(
                viewport={"width": 1100, "height": 760}, color_scheme=scheme
            )
            page = context.new_page()
            for shot in PAGES:  # the login page first, then the rest logged in
                if shot.name != "login" and "/console/login" in page.url:
                    login(page, demo)
                open_shot(page, demo, shot)
                path = out / (shot.name + ("-dark" if scheme == "dark" else "") + ".png")
                page.screenshot(path=str(path), full_page=True)
                written.append(path)
            context.close()
        browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SHOTS, help="where the PNGs go")
    parser.add_argument("--dark", action="store_true", help="also the dark scheme's")
    args = parser.parse_args()
    from millpond.server.config import Settings
    from millpond.server.testing import free_port, start_server

    with tempfile.TemporaryDirectory(prefix="millpond-demo-") as data:
        settings = Settings(
            host="127.0.0.1", port=free_port(), data_dir=Path(data), gateway_port=free_port()
        )
        running = start_server(settings)
        try:
            demo = seed(running.url, running.admin_key)
            for path in shoot(demo, args.out, args.dark):
                print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
        finally:
            running.stop()


if __name__ == "__main__":
    main()
