"""pgbench through the Postgres gateway vs Postgres directly and vs PgBouncer, side by side.

Starts ``millpond up`` in a subprocess (embedded Postgres in a temporary data directory),
creates ``admin/bench`` and initialises pgbench's tables in it through the gateway (COPY
and all). Then runs the same pgbench scripts — ``select-only`` (``-S``) and the default
TPC-B-like one — for a fixed time, with the same clients and threads, against:

* **direct**: Postgres itself, over its Unix socket, as the superuser (the anchor);
* **gateway**: millpond's gateway on loopback, the admin's API key as ``PGPASSWORD``;
* **pgbouncer**: PgBouncer (Debian's ``pgbouncer`` package) in session mode on loopback,
  pointing at the same Unix socket, logging in as the database's owner role — the role
  the gateway uses for the admin.

Every client connection is plain TCP on loopback for both proxies (``sslmode=disable``),
so neither pays for TLS. Rounds interleave the targets so drift hits all alike; the
figures are medians over rounds. A last run with one client measures the latency a
proxy adds to a lone select (median of per-transaction latencies from pgbench's log).

    python benchmarks/gateway_pgbench.py [--time 10] [--rounds 3] [--clients 8]

PgBouncer is skipped, with a message, if it is not installed and cannot be (``apt-get
install -y pgbouncer`` is tried when running as root). Prints tps and latencies per
target, the CPU the relay process (the server, PgBouncer) used a transaction (from
``/proc``), the ratios, and ``ratio gateway vs pgbouncer (select-only tps): X`` last.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _harness import Server, cpu_seconds, running_server

from millpond.server.postgres import provision
from millpond.server.postgres.embedded import PORT, SUPERUSER, SYSTEM_USER, EmbeddedPostgres
from millpond.server.testing import free_port

SCRIPTS = {"select-only": ["-S"], "tpcb-like": []}


@dataclass
class Target:
    name: str
    host: str
    port: int
    user: str
    password: str
    dbname: str
    relay_pid: int = 0
    """The process between pgbench and Postgres (the server, PgBouncer); 0: none."""

    def env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.password, "PGSSLMODE": "disable"}

    def args(self) -> list[str]:
        return ["-h", self.host, "-p", str(self.port), "-U", self.user, self.dbname]


@dataclass
class Result:
    tps: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    relay_us: list[float] = field(default_factory=list)
    """CPU the relay process used a transaction (µs)."""


def pgbench_binary() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    from millpond.server.postgres.embedded import bin_dir

    return str(bin_dir() / "pgbench")


def run_pgbench(
    target: Target, extra: list[str], seconds: int, clients: int, threads: int, log: Path | None
) -> tuple[float, float, list[float]]:
    """tps, average latency (ms) and, with ``log``, every transaction's latency (ms)."""
    cmd = [pgbench_binary(), "-n", "-T", str(seconds), "-c", str(clients), "-j", str(threads)]
    if log is not None:
        cmd += ["-l", f"--log-prefix={log}"]
    result = subprocess.run(
        [*cmd, *extra, *target.args()],
        env=target.env(),
        capture_output=True,
        text=True,
        cwd=log.parent if log else None,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"pgbench against {target.name} failed:\n{result.stderr}")
    tps = float(re.search(r"tps = ([\d.]+)", result.stdout).group(1))  # type: ignore[union-attr]
    avg = float(re.search(r"latency average = ([\d.]+) ms", result.stdout).group(1))  # type: ignore[union-attr]
    latencies: list[float] = []
    if log is not None:
        for path in log.parent.glob(log.name + ".*"):
            for line in path.read_text().splitlines():
                latencies.append(int(line.split()[2]) / 1000)
            path.unlink()
    return tps, avg, latencies


# -- PgBouncer ----------------------------------------------------------------------------------


def find_pgbouncer() -> str | None:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if found or os.geteuid() != 0:
        return found
    print("installing PgBouncer (apt-get install -y pgbouncer)…", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    installed = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "pgbouncer"], env=env, capture_output=True, check=False
    )
    if installed.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "pgbouncer"],
            env=env,
            capture_output=True,
            check=False,
        )
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )


class PgBouncer:
    """PgBouncer in session mode in a temporary directory. As root it runs as the user
    that owns the embedded cluster's socket (PgBouncer refuses to run as root)."""

    def __init__(self, binary: str, socket_dir: Path, pg_name: str, role: str, password: str):
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.role, self.password = role, password
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"bench = host={socket_dir} port={PORT} dbname={pg_name}"
            f" user={role} password={password}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'userlist.txt'}\n"
            "pool_mode = session\nmax_client_conn = 500\ndefault_pool_size = 100\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\npidfile = {self.dir / 'pgbouncer.pid'}\n"
            "log_connections = 0\nlog_disconnections = 0\n"
        )
        (self.dir / "userlist.txt").write_text(f'"{role}" "{password}"\n')
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = SYSTEM_USER
            entry = pwd.getpwnam(SYSTEM_USER)
            for path in [self.dir, *self.dir.iterdir()]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [self.binary, str(self.dir / "pgbouncer.ini")]
        if self.user:
            cmd[1:1] = ["-u", self.user]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"pgbouncer exited: {self.proc.stderr.read().decode()}")  # type: ignore[union-attr]
            probe = subprocess.run(
                [
                    shutil.which("pg_isready") or "pg_isready",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                ],
                capture_output=True,
                check=False,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise SystemExit("pgbouncer did not start listening")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def target(self) -> Target:
        pid = self.proc.pid if self.proc is not None else 0
        return Target("pgbouncer", "127.0.0.1", self.port, self.role, self.password, "bench", pid)


# -- main -----------------------------------------------------------------------------------------


def setup(server: Server, gateway_port: int, scale: int) -> tuple[str, Target, Target]:
    with server.client() as http:
        http.post("/v1/databases", json={"name": "bench"}).raise_for_status()
        r = http.post("/v1/query", json={"database": "admin/bench", "sql": "SELECT 1"})
        r.raise_for_status()
        r = http.post(
            "/v1/query", json={"database": "admin/bench", "sql": "SELECT current_database()"}
        )
        pg_name = str(r.json()["data"][0][0])
    gateway = Target(
        "gateway", "127.0.0.1", gateway_port, "bench", server.key, "admin/bench", server.pid
    )
    print(f"initialising pgbench tables (scale {scale}) through the gateway…", flush=True)
    init = subprocess.run(
        [pgbench_binary(), "-i", "-q", "-s", str(scale), *gateway.args()],
        env=gateway.env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if init.returncode != 0:
        raise SystemExit(f"pgbench -i through the gateway failed:\n{init.stderr}")
    pg = EmbeddedPostgres(server.data_dir)
    direct = Target(
        "direct",
        str(pg.socket_dir),
        PORT,
        SUPERUSER,
        pg.password_file.read_text().strip(),
        pg_name,
    )
    return pg_name, direct, gateway


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--time", type=int, default=10, help="seconds per pgbench run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scale", type=int, default=10)
    args = parser.parse_args()

    secret = secrets.token_urlsafe(32)
    gateway_port = free_port()
    bouncer: PgBouncer | None = None
    with running_server(
        MILLPOND_GATEWAY_PORT=str(gateway_port), MILLPOND_SECRET_KEY=secret
    ) as server:
        pg_name, direct, gateway = setup(server, gateway_port, args.scale)
        targets = [direct, gateway]
        binary = find_pgbouncer()
        if binary is None:
            print("PgBouncer is not installed and could not be installed: skipping it")
        else:
            role = provision.DatabaseRoles(pg_name).role("owner")
            bouncer = PgBouncer(
                binary,
                EmbeddedPostgres(server.data_dir).socket_dir,
                pg_name,
                role,
                provision.role_password(secret.encode(), role),
            )
            bouncer.start()
            targets.append(bouncer.target())
        try:
            report(targets, args)
        finally:
            if bouncer is not None:
                bouncer.stop()


def report(targets: list[Target], args: argparse.Namespace) -> None:
    results: dict[tuple[str, str], Result] = {}
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "txn"
        for target in targets:  # warm up: caches, connections, the gateway's auth cache
            run_pgbench(target, ["-S"], 2, args.clients, args.threads, None)
        for round_no in range(args.rounds):
            for script, extra in SCRIPTS.items():
                order = targets if round_no % 2 == 0 else targets[::-1]
                for target in order:
                    relay = {"relay": lambda pid, _, t=target: pid == t.relay_pid}
                    before = cpu_seconds(relay)["relay"]
                    tps, _avg, latencies = run_pgbench(
                        target, extra, args.time, args.clients, args.threads, log
                    )
                    used = cpu_seconds(relay)["relay"] - before
                    result = results.setdefault((script, target.name), Result())
                    result.relay_us.append(used / (tps * args.time) * 1e6)
                    result.tps.append(tps)
                    result.latency_ms.append(statistics.median(latencies))
            print(f"round {round_no + 1}/{args.rounds} done", flush=True)
        lone: dict[str, tuple[float, float]] = {}
        for target in targets:
            lone_tps, _avg, latencies = run_pgbench(target, ["-S"], args.time, 1, 1, log)
            lone[target.name] = (statistics.median(latencies), lone_tps)

    print(
        f"\npgbench -T {args.time} -c {args.clients} -j {args.threads}, scale {args.scale},"
        f" median of {args.rounds} rounds"
    )
    print(
        f"{'script':<12} {'target':<10} {'tps':>10} {'median latency':>16}"
        f" {'relay CPU a transaction':>24}"
    )
    for (script, name), result in results.items():
        relay = f"{statistics.median(result.relay_us):>21.1f} µs" if name != "direct" else ""
        print(
            f"{script:<12} {name:<10} {statistics.median(result.tps):>10.0f}"
            f" {statistics.median(result.latency_ms):>13.3f} ms {relay}"
        )
    print("\none client, select-only: median latency")
    for name, (value, lone_tps) in lone.items():
        added = f" (+{value - lone['direct'][0]:.3f} ms vs direct)" if name != "direct" else ""
        print(f"  {name:<10} {value:.3f} ms{added}, {lone_tps:.0f} tps")

    def tps(script: str, name: str) -> float:
        return statistics.median(results[(script, name)].tps)

    print()
    for script in SCRIPTS:
        ratio = tps(script, "gateway") / tps(script, "direct")
        print(f"ratio gateway vs direct ({script} tps): {ratio:.2f}")
    if ("select-only", "pgbouncer") in results:
        print(
            "ratio gateway vs pgbouncer (tpcb-like tps):"
            f" {tps('tpcb-like', 'gateway') / tps('tpcb-like', 'pgbouncer'):.2f}"
        )
        print(
            "ratio gateway vs pgbouncer (select-only tps):"
            f" {tps('select-only', 'gateway') / tps('select-only', 'pgbouncer'):.2f}"
        )


if __name__ == "__main__":
    main()
