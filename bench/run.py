"""The service's load benchmark: serve it on a private PostgreSQL database, drive each case with wrk, print one table.

With one worker, the reference app (bench/reference_app.py: the request path of fastapi/full-stack-fastapi-template's
backend) is measured in the same run, on its own private database, for the cases it has. With --baseline <git-ref>,
that commit of the service is exported outside the repository and measured in turns with ours (an A/B in one run).
Run it with `./dev bench` (options: `./dev bench --help`). What every figure means: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, make_url, text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1
PASSWORD = "bench passphrase that is long enough"
DEFAULT_ADMIN_URL = "postgresql://root@127.0.0.1:5432/test"

ALL_CASES = ["health", "get", "list", "create", "login", "flood", "list256"]
CASE_HELP = {
    "health": "GET /health (framework ceiling)",
    "get": "GET one task (token check + 1 row)",
    "list": "GET the list of 100 tasks",
    "create": "POST one task",
    "login": "POST /api/auth/login (bcrypt)",
    "flood": "task-read p95 during a login flood vs idle",
    "list256": "list at 256 connections vs 16",
}

# fastapi/full-stack-fastapi-template's backend on a comparable machine (2 cores, PostgreSQL 15 on loopback,
# 1 uvicorn worker, wrk at 16 connections), as issue 6 states them: (req/s, req per app CPU-second).
TEMPLATE = {
    "health": (7000.0, 7000.0),
    "get": (400.0, 385.0),
    "list": (172.0, 170.0),
    "create": (235.0, 230.0),
    "login": (10.7, None),
}
# Issue 6's targets: ours / the template, in requests per app CPU-second. Read against the reference measured in the
# same run (bench/reference_app.py); without it (--no-reference, 2 workers), against the fixed figures above.
TARGET_RATIO = {"get": 3.0, "list": 3.0, "create": 2.0}
# The cases bench/reference_app.py answers, with the status its routes give (its create answers 200).
REFERENCE_CASES = ("health", "get", "list", "create")
REFERENCE_HEALTH = "/api/v1/utils/health-check/"
LOGIN_TARGET_OF_BOUND = 0.90
FLOOD_TARGET_RATIO = 3.0
LIST256_TARGET_RATIO = 0.80

# The task reader of the flood case is paced (each connection waits this long between requests), so its
# "idle" latency is that of a lightly loaded server rather than of one the reader saturates itself.
READER_CONNECTIONS = 2
LOGIN_MIN_SECONDS = 20
LOGIN_TIMEOUT_SECONDS = 30
READER_DELAY_MS = 20

# wrk's done() hook prints one JSON line: exact percentiles (wrk --latency only shows 50/75/90/99).
LUA_DONE = r"""
function done(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"mean_us":%.1f,"p50_us":%d,"p90_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(95), latency:percentile(99), latency.max))
end
"""


class BenchError(RuntimeError):
    """The benchmark could not run (missing tool, server that does not start, wrong answers)."""


# ---------------------------------------------------------------------------------------------- processes, /proc


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds used so far: user + system) of a live process, from /proc/<pid>/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may contain spaces
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _descendants(root: int) -> list[int]:
    """The process and all its descendants (uvicorn's supervisor and its worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _cpu_of(pids: list[int]) -> dict[int, float]:
    return {pid: stat[1] for pid in pids if (stat := _proc_stat(pid)) is not None}


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---------------------------------------------------------------------------------------------- tools, database


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("bench: wrk is not installed; installing the Debian package (apt-get install -y wrk) ...", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if sudo and not shutil.which("sudo"):
        raise BenchError("wrk is missing and this user cannot install it: run `apt-get install -y wrk` as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        if subprocess.run([*sudo, *command], env=env, timeout=600, check=False).returncode != 0:
            raise BenchError(f"`{' '.join(command)}` failed: install wrk yourself (Debian/Ubuntu package `wrk`)")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk is still not on PATH after apt-get install")
    return found


@contextmanager
def private_database(
    admin_url: str, *, migrate: bool = True, kind: str = ""
) -> Iterator[tuple[str, Callable[[], list[int]]]]:
    """A fresh PostgreSQL database (dropped afterwards) and a function listing its backends' pids.

    migrate: bring it to the working tree's schema (False: leave it empty, for the reference app, and for the
    baseline, which its own `serve` migrates). kind: part of the name (todo_bench_<kind>_<random>).
    """
    from todo_api.config import normalize_database_url
    from todo_api.migrations import upgrade

    admin_address = make_url(normalize_database_url(admin_url))
    if admin_address.get_backend_name() != "postgresql":
        raise BenchError("--database-url must be a postgresql:// URL (the benchmark measures PostgreSQL)")
    name = f"todo_bench_{kind + '_' if kind else ''}{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_address, isolation_level="AUTOCOMMIT", pool_size=1)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def backends() -> list[int]:
        with admin.connect() as connection:
            rows = connection.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = :n"), {"n": name})
            return [row[0] for row in rows]

    try:
        url = admin_address.set(database=name).render_as_string(hide_password=False)
        if migrate:
            upgrade(url)
        yield url, backends
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def bcrypt_seconds(rounds: int, samples: int = 5) -> float:
    """Median time of one password check at the configured cost, with the service's own hasher."""
    from todo_api.security import hash_password, verify_password

    password_hash = hash_password(PASSWORD, rounds=rounds)
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        if not verify_password(PASSWORD, password_hash, rounds=rounds):
            raise BenchError("the service's hasher does not verify its own hash")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------- the server


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    workers: int
    health_path: str = "/health"  # answers 200 without the database: readiness, idleness, the probe after logins

    def pids(self) -> list[int]:
        return _descendants(self.process.pid)

    def worker_pids(self) -> list[int]:
        pids = self.pids()
        return pids[1:] if self.workers > 1 else pids


def service_env(
    database_url: str, *, secret: str, rounds: int | None, port: int, pythonpath: Path | None = None
) -> dict[str, str]:
    """The service's environment. pythonpath: put first on PYTHONPATH (the baseline's src/, so that its todo_api
    is imported, ahead of the working tree's editable install, whose .pth entry comes after site-packages)."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "production",
        "BETTER_AUTH_SECRET": secret,
        "LOG_LEVEL": "warning",
        "RATE_LIMIT_ENABLED": "false",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    }
    if rounds is not None:
        env["BCRYPT_ROUNDS"] = str(rounds)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), os.environ.get("PYTHONPATH")]))
    return env


@contextmanager
def serve(
    database_url: str,
    *,
    workers: int,
    secret: str,
    rounds: int | None,
    scratch: Path,
    pythonpath: Path | None = None,
    log_name: str = "server",
) -> Iterator[Server]:
    """`python -m todo_api serve` (it migrates the database first), with scratch as its working directory."""
    port = _free_port()
    env = service_env(database_url, secret=secret, rounds=rounds, port=port, pythonpath=pythonpath)
    command = [sys.executable, "-m", "todo_api", "serve", "--port", str(port), "--workers", str(workers)]
    with _spawn(command, env, scratch, f"{log_name}-{workers}w.log", port, workers) as server:
        yield server


@contextmanager
def serve_reference(database_url: str, *, secret: str, scratch: Path) -> Iterator[Server]:
    """bench/reference_app.py under uvicorn with 1 worker: loop and HTTP parser uvicorn's defaults, like ours."""
    port = _free_port()
    env = {
        **os.environ,
        "REFERENCE_DATABASE_URL": database_url,
        "REFERENCE_SECRET_KEY": secret,
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(ROOT / "bench"),
        "reference_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        # As ours runs in the bench (LOG_LEVEL=warning): no line per request.
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    with _spawn(command, env, scratch, "reference.log", port, 1, REFERENCE_HEALTH) as server:
        yield server


@contextmanager
def _spawn(
    command: list[str],
    env: dict[str, str],
    scratch: Path,
    log_name: str,
    port: int,
    workers: int,
    health_path: str = "/health",
) -> Iterator[Server]:
    log_path = scratch / log_name
    log = log_path.open("wb")
    # Its own session: a Ctrl-C at the terminal reaches us, and we stop the whole group in order.
    # The scratch directory as cwd keeps a developer's .env out of the measurement.
    process = subprocess.Popen(
        command, env=env, cwd=scratch, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = Server(process, f"http://127.0.0.1:{port}", workers, health_path)
    try:
        _wait_until_serving(server, log_path)
        yield server
    finally:
        _stop(process)
        log.close()


def _wait_until_serving(server: Server, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchError(f"the server exited with {server.process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            # Every worker process up (uvicorn forks them after binding), then the port answers.
            if (
                len(server.worker_pids()) >= server.workers
                and _request(server.url, "GET", server.health_path)[0] == 200
            ):
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise BenchError(
        f"the server did not answer {server.health_path} within {timeout:.0f} s:\n{log.read_text()[-3000:]}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=5)


def _request(
    base: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    token: str | None = None,
    timeout: float = 30,
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


# ---------------------------------------------------------------------------------------------- the baseline

# The cases measured for the baseline too, in turns with ours (login and flood, when selected, run for ours only).
BASELINE_CASES = ("health", "get", "list", "create", "list256")
# What the change being measured must keep: ours / baseline per app CPU-second (and list256: no error, no stall).
AB_TARGET_RATIO = {"get": 0.95, "list": 0.95, "create": 0.95}

# Run in the environment a server gets: which todo_api it imports, and from where every module of it comes.
IMPORT_CHECK = r"""
import importlib, json, sys
import todo_api
try:
    importlib.import_module("todo_api.cli")  # what `python -m todo_api serve` runs (most of the package)
except ModuleNotFoundError:
    pass
files = sorted({m.__file__ for n, m in list(sys.modules.items())
                if n.split(".")[0] == "todo_api" and getattr(m, "__file__", None)})
print(json.dumps({"file": todo_api.__file__, "files": files}))
"""


@dataclass
class Export:
    """A commit of the service, exported outside the repository and served from there (--baseline, --ours)."""

    name: str  # "baseline" or "ours"
    ref: str
    commit: str
    tree: Path  # `git archive <commit>`, unpacked; its src/ goes first on its servers' PYTHONPATH
    cwd: Path  # its servers' scratch working directory
    module_file: str = ""  # todo_api.__file__ as its environment imports it (checked)

    @property
    def src(self) -> Path:
        return self.tree / "src"


def _git(*args: str) -> str | None:
    """A read-only git command in the repository: its stdout, or None if it failed."""
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def export_commit(name: str, ref: str, into: Path) -> Export:
    """The commit's tree, `git archive`d and unpacked into `into` (outside the repository; git's state is untouched).

    Its own alembic.ini and migrations come with it, wherever that version keeps them (next to src/, or inside the
    package): its own `migrate` and `serve` find them there.
    """
    if into.resolve().is_relative_to(ROOT.resolve()):
        raise BenchError(f"--{name} must be exported outside the repository, not into {into}")
    commit = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if not commit:
        raise BenchError(f"--{name} {ref}: not a commit of this repository")
    archive, tree, cwd = into / "export.tar", into / f"tree-{commit[:12]}", into / "cwd"
    tree.mkdir()
    cwd.mkdir()
    for command in (
        ["git", "archive", "--format=tar", f"--output={archive}", commit],
        ["tar", "-x", "-f", str(archive), "-C", str(tree)],
    ):
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise BenchError(f"`{' '.join(command)}` failed ({done.returncode}): {done.stderr.strip()}")
    archive.unlink()
    if not (tree / "src" / "todo_api" / "__init__.py").is_file():
        raise BenchError(f"--{name} {ref} ({commit[:12]}) has no src/todo_api package")
    return Export(name, ref, commit, tree, cwd)


def imported_todo_api(env: dict[str, str], cwd: Path) -> tuple[str, list[str]]:
    """(todo_api.__file__, the files of every todo_api module it loads) in that environment, from that cwd."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"importing todo_api failed ({done.returncode}):\n{done.stderr[-3000:]}")
    found = json.loads(done.stdout.splitlines()[-1])
    return found["file"], found["files"]


def prepare_export(export: Export, env: dict[str, str]) -> None:
    """Check that its environment imports the exported todo_api (every module of it, none of the working tree's),
    then migrate its database with its own `python -m todo_api migrate` (its `serve` would too; done first, a
    failure shows as such, not as a server that died)."""
    file, files = imported_todo_api(env, export.cwd)
    src = export.src.resolve()
    strays = [path for path in [file, *files] if not Path(path).resolve().is_relative_to(src)]
    if strays:
        raise BenchError(f"--{export.name}'s environment imports todo_api from outside {src}: {', '.join(strays)}")
    export.module_file = file
    done = subprocess.run(
        [sys.executable, "-m", "todo_api", "migrate"],
        env=env,
        cwd=export.cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"migrating --{export.name}'s database failed ({done.returncode}):\n{done.stderr[-3000:]}")


def check_export_server(server: Server, export: Export) -> None:
    """Each process serving the export runs from its scratch cwd with its src/ first on PYTHONPATH.

    With the same interpreter, that is the environment prepare_export saw import the export's code.
    """
    for pid in server.pids():
        try:
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        pythonpath = next(
            (item[len(b"PYTHONPATH=") :].decode() for item in environ if item.startswith(b"PYTHONPATH=")), ""
        )
        if cwd != export.cwd.resolve() or pythonpath.split(os.pathsep)[0] != str(export.src):
            raise BenchError(f"process {pid} serving --{export.name} runs from {cwd} with PYTHONPATH={pythonpath!r}")


# ---------------------------------------------------------------------------------------------- data, through the API


@dataclass
class Account:
    id: str
    email: str
    token: str


@dataclass
class Fixtures:
    reader: Account  # 100 tasks: the get and list cases
    task_id: int
    writer: Account  # the create case adds its rows here, so the list stays at 100
    login: Account
    tagged: bool = False  # --tagged: every task sent (the reader's, the create case's) carries tags and a checklist
    tasks: int = 0  # the reader's tasks, as its list answers (checked against the number created)
    returns_tags: bool = False  # the service gave back the tags and checklist it was sent (one GET at seeding)


# --tagged: every task the bench sends carries 2 tags and 3 checklist items. A service older than tags ignores them
# (its request models ignore unknown fields), so --tagged --baseline <older commit> measures today's tagged tasks
# against that commit's plain ones.
TAGGED_CHECKLIST: list[dict[str, Any]] = [{"title": "one"}, {"title": "two", "done": True}, {"title": "three"}]


def tagged_fields(number: int) -> dict[str, Any]:
    return {"tags": ["work", f"t{number % 7}"], "checklist": TAGGED_CHECKLIST}


def _register(base: str, label: str) -> Account:
    email = f"bench-{label}-{uuid.uuid4().hex[:8]}@example.com"
    status, body = _request(
        base, "POST", "/api/auth/register", {"name": f"Bench {label}", "email": email, "password": PASSWORD}
    )
    if status != 201:
        raise BenchError(f"register answered {status}: {body}")
    return Account(body["user"]["id"], email, body["access_token"])


def create_fixtures(base: str, tasks: int = 100, *, tagged: bool = False) -> Fixtures:
    """The reader's tasks (with --tagged: 2 tags and 3 checklist items each), the writer and the login account.

    Checked: the reader's list holds exactly `tasks` tasks; and, tagged, whether one task read back has the tags
    and checklist it was sent (`returns_tags`: a service that predates them drops them).
    """
    reader = _register(base, "reader")
    task_ids = []
    for number in range(tasks):
        task = {"title": f"Task {number}", "description": "x" * 80, "priority": "high", "category": "bench"}
        if tagged:
            task |= tagged_fields(number)
        status, body = _request(base, "POST", f"/api/{reader.id}/tasks", task, reader.token)
        if status != 201:
            raise BenchError(f"create task answered {status}: {body}")
        task_ids.append(body["id"])
    status, listed = _request(base, "GET", f"/api/{reader.id}/tasks?limit={max(tasks, 1)}", token=reader.token)
    if status != 200 or not isinstance(listed, list) or len(listed) != tasks:
        found = len(listed) if isinstance(listed, list) else listed
        raise BenchError(f"the reader's list answered {status} with {found} tasks, expected {tasks}")
    middle = len(task_ids) // 2
    returns_tags = False
    if tagged:
        status, task = _request(base, "GET", f"/api/{reader.id}/tasks/{task_ids[middle]}", token=reader.token)
        if status != 200:
            raise BenchError(f"reading task {task_ids[middle]} back answered {status}: {task}")
        sent = tagged_fields(middle)
        returns_tags = sorted(map(str.lower, task.get("tags") or [])) == sorted(sent["tags"]) and [
            (item.get("title"), bool(item.get("done"))) for item in task.get("checklist") or []
        ] == [(item["title"], bool(item.get("done"))) for item in sent["checklist"]]
    return Fixtures(
        reader,
        task_ids[middle],
        _register(base, "writer"),
        _register(base, "login"),
        tagged=tagged,
        tasks=len(listed),
        returns_tags=returns_tags,
    )


def seed_service(base: str, name: str, *, tagged: bool, require_tags: bool) -> Fixtures:
    """create_fixtures, with a progress line; tagged and require_tags (ours): the tags must come back."""
    what = "100 tasks (2 tags and 3 checklist items each)" if tagged else "100 tasks"
    print(f"bench: {name}: creating users and {what} through the API ...", flush=True)
    fixtures = create_fixtures(base, tagged=tagged)
    if tagged:
        if require_tags and not fixtures.returns_tags:
            raise BenchError(f"--tagged: {name} did not give back the tags and checklist of the tasks it was sent")
        kept = "returns them" if fixtures.returns_tags else "ignores them (its tasks have none)"
        print(f"bench: {name}: {fixtures.tasks} tasks in the reader's list; tags and checklists: {kept}", flush=True)
    return fixtures


@dataclass
class ReferenceFixtures:
    """The reference app's data: it has no login route, so bench/reference_app.py seeds it and mints the tokens."""

    reader_token: str  # 100 items: get and list
    item_id: str
    writer_token: str  # create


def reference_database_url(url: str) -> str:
    """The same database through psycopg 3, the driver the template uses."""
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def seed_reference(database_url: str, secret: str, scratch: Path) -> ReferenceFixtures:
    env = {**os.environ, "REFERENCE_DATABASE_URL": database_url, "REFERENCE_SECRET_KEY": secret}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "reference_app.py"), "seed"],
        env=env,
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"seeding the reference app failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return ReferenceFixtures(**json.loads(done.stdout.splitlines()[-1]))


def reference_loads(fixtures: ReferenceFixtures, cases: list[str]) -> dict[str, Load]:
    """The reference app's counterpart of each case, for the selected ones it has."""
    items = "/api/v1/items/"
    loads = {
        "health": Load(REFERENCE_HEALTH),
        "get": Load(f"{items}{fixtures.item_id}", token=fixtures.reader_token),
        "list": Load(f"{items}?skip=0&limit=100", token=fixtures.reader_token),
        "create": Load(
            items,
            method="POST",
            token=fixtures.writer_token,
            body=json.dumps({"title": "A benchmark item", "description": "x" * 80}),
        ),
    }
    return {case: load for case, load in loads.items() if case in cases}


# ---------------------------------------------------------------------------------------------- wrk


@dataclass
class Load:
    """One wrk invocation: a path, how to send it, and how hard."""

    path: str
    method: str = "GET"
    token: str | None = None
    body: str | None = None
    connections: int = 16
    threads: int = 2
    delay_ms: int = 0
    expect: int = 200
    probe: bool = True  # after the run, send one more of these (False: the server's health check instead)
    timeout: float | None = None  # wrk's --timeout for this load (default: the run's)

    def lua(self) -> str:
        lines = [f"wrk.method = {json.dumps(self.method)}"]
        if self.token:
            lines.append(f'wrk.headers["Authorization"] = {json.dumps("Bearer " + self.token)}')
        if self.body is not None:
            lines.append('wrk.headers["Content-Type"] = "application/json"')
            lines.append(f"wrk.body = {json.dumps(self.body)}")
        if self.delay_ms:
            lines.append(f"function delay() return {self.delay_ms} end")
        return "\n".join(lines) + "\n" + LUA_DONE


@dataclass
class Measure:
    """What one measured wrk run saw, and the CPU each party used meanwhile."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int
    timeouts: int
    connections: int
    app_cpu_s: float
    db_cpu_s: float | None
    wrk_cpu_s: float
    other_cpu_s: float
    per_app_cpu_s: float | None
    probe_ms: float | None  # one request right after the run; None = no answer within --timeout (stalled)

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors + self.timeouts


@dataclass
class Bench:
    wrk: str
    server: Server
    backends: Callable[[], list[int]]
    scratch: Path
    duration: float
    warmup: float
    timeout: float
    repeat: int = 1

    def start(self, load: Load, seconds: float) -> subprocess.Popen[str]:
        script = self.scratch / f"load-{uuid.uuid4().hex[:8]}.lua"
        script.write_text(load.lua())
        command = [
            self.wrk,
            f"-t{min(load.threads, load.connections)}",
            f"-c{load.connections}",
            f"-d{seconds:g}s",
            f"--timeout={load.timeout or self.timeout:g}s",
            "--latency",
            "-s",
            str(script),
            self.server.url + load.path,
        ]
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(self, process: subprocess.Popen[str], seconds: float) -> dict[str, Any]:
        stdout, stderr = process.communicate(timeout=seconds + self.timeout + 30)
        for line in stdout.splitlines():
            if line.startswith("WRKJSON "):
                result: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
                return result
        raise BenchError(f"wrk gave no result (exit {process.returncode}):\n{stdout}\n{stderr}")

    def check(self, load: Load) -> None:
        """One request by hand first: a benchmark of 401s or 404s would measure nothing."""
        body = json.loads(load.body) if load.body else None
        status, answer = _request(self.server.url, load.method, load.path, body, load.token)
        if status != load.expect:
            raise BenchError(f"{load.method} {load.path} answered {status}, expected {load.expect}: {answer}")

    def warm(self, load: Load) -> None:
        if self.warmup > 0:
            self.finish(self.start(load, self.warmup), self.warmup)
            self.settle()

    def settle(self, limit: float = 60) -> bool:
        """Wait until the server is idle: requests wrk abandoned (a bcrypt hash, a stalled pool) still run."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before = sum(_cpu_of(self.server.pids()).values())
            time.sleep(0.5)
            if sum(_cpu_of(self.server.pids()).values()) - before < 0.05:
                try:
                    if _request(self.server.url, "GET", self.server.health_path, timeout=2)[0] == 200:
                        return True
                except OSError:
                    pass
        print(f"bench: the server did not settle within {limit:.0f} s", flush=True)
        return False

    def probe(self, load: Load) -> float | None:
        """Milliseconds one more request takes right after a run, or None if it gets no answer (a stall)."""
        body = json.loads(load.body) if load.body and load.probe else None
        method, path = (load.method, load.path) if load.probe else ("GET", self.server.health_path)
        start = time.monotonic()
        try:
            _request(self.server.url, method, path, body, load.token, timeout=self.timeout)
        except OSError:  # urllib raises TimeoutError (an OSError) when nothing comes back in time
            return None
        return round((time.monotonic() - start) * 1000, 1)

    def measure(self, load: Load, seconds: float | None = None) -> Measure:
        seconds = seconds or self.duration
        app_pids, db_pids = self.server.pids(), self._backends()
        app_before, db_before = _cpu_of(app_pids), _cpu_of(db_pids)
        busy_before, children_before = _machine_busy_seconds(), _children_cpu_seconds()
        start = time.monotonic()
        raw = self.finish(self.start(load, seconds), seconds)
        wall = time.monotonic() - start
        wrk_cpu = _children_cpu_seconds() - children_before  # wrk is our only child reaped meanwhile
        busy = _machine_busy_seconds() - busy_before
        app_pids = sorted(set(app_pids) | set(self.server.pids()))
        db_pids = sorted(set(db_pids) | set(self._backends()))
        app_cpu = _cpu_delta(app_before, _cpu_of(app_pids))
        db_cpu = _cpu_delta(db_before, _cpu_of(db_pids)) if db_pids else None
        seconds = raw["duration_us"] / 1e6
        return Measure(
            requests=raw["requests"],
            seconds=round(seconds, 2),
            rps=round(raw["requests"] / seconds, 1),
            p50_ms=raw["p50_us"] / 1000,
            p95_ms=raw["p95_us"] / 1000,
            p99_ms=raw["p99_us"] / 1000,
            max_ms=raw["max_us"] / 1000,
            non_2xx=raw["status"],
            socket_errors=raw["connect"] + raw["read"] + raw["write"],
            timeouts=raw["timeout"],
            connections=load.connections,
            app_cpu_s=round(app_cpu, 2),
            db_cpu_s=round(db_cpu, 2) if db_cpu is not None else None,
            wrk_cpu_s=round(wrk_cpu, 2),
            other_cpu_s=round(max(0.0, busy - app_cpu - (db_cpu or 0) - wrk_cpu) * seconds / wall, 2),
            per_app_cpu_s=round(raw["requests"] / app_cpu, 1) if app_cpu > 0 else None,
            probe_ms=self.probe(load),
        )

    def _backends(self) -> list[int]:
        try:
            return self.backends()
        except Exception:  # the server's database being busy must not abort the measurement
            return []


def _cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    # A process that appeared meanwhile counts from zero; one that vanished is lost (none should).
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


# ---------------------------------------------------------------------------------------------- the cases


@dataclass
class CaseResult:
    case: str
    workers: int
    measure: Measure | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Peer:
    """Another server measured in turns with ours (a Bench of its own): the reference app, or the baseline.

    loads: its counterpart of each case; cases: those it is measured for (list256 uses its "list" load).
    """

    bench: Bench
    loads: dict[str, Load]
    cases: list[str]
    label: str  # for the progress lines


def _median_run(runs: list[Measure]) -> tuple[Measure, list[float]]:
    """The run with the median requests per app CPU-second, and every run's figure, lowest first.

    A shared machine's noise moves single runs by a fifth or more: the median run stands for the case, the others
    are kept for the spread.
    """
    runs = sorted(runs, key=lambda run: run.per_app_cpu_s or 0)
    return runs[len(runs) // 2], [round(run.per_app_cpu_s or 0, 1) for run in runs]


def _side(runs: list[Measure]) -> dict[str, Any]:
    """One server's part of an A/B case: its median run (per app CPU-second), the spread, and all runs' errors."""
    median, spread = _median_run(runs)
    return {
        "measure": asdict(median),
        "per_app_cpu_s_runs": spread,
        # non-2xx, socket errors, timeouts, and runs whose probe got no answer: summed over every run
        "non_2xx": sum(run.non_2xx for run in runs),
        "socket_errors": sum(run.socket_errors for run in runs),
        "timeouts": sum(run.timeouts for run in runs),
        "stalled": sum(run.probe_ms is None for run in runs),
    }


def _ab(ours: list[Measure], baseline: list[Measure]) -> dict[str, Any]:
    """Ours and the baseline, measured in turns: each side's figures and ours / baseline per app CPU-second."""
    mine, theirs = _side(ours), _side(baseline)
    per_cpu, base_per_cpu = mine["measure"]["per_app_cpu_s"], theirs["measure"]["per_app_cpu_s"]
    return {"ours": mine, "baseline": theirs, "ratio": per_cpu / base_per_cpu if per_cpu and base_per_cpu else None}


def service_loads(fixtures: Fixtures) -> dict[str, Load]:
    """The service's request of each case but flood and list256 (built from the list and the get), on its data."""
    reader, writer = fixtures.reader, fixtures.writer
    return {
        "health": Load("/health"),
        "get": Load(f"/api/{reader.id}/tasks/{fixtures.task_id}", token=reader.token),
        "list": Load(f"/api/{reader.id}/tasks", token=reader.token),
        "create": Load(
            f"/api/{writer.id}/tasks",
            method="POST",
            token=writer.token,
            body=json.dumps(
                {"title": "A benchmark task", "description": "x" * 80, "priority": "high"}
                | (tagged_fields(0) if fixtures.tagged else {})
            ),
            expect=201,
        ),
        "login": Load(
            "/api/auth/login",
            method="POST",
            body=json.dumps({"email": fixtures.login.email, "password": PASSWORD}),
            probe=False,
            # 16 logins share the cores: each takes 16 / cores hashes' time, seconds on a busy machine.
            timeout=LOGIN_TIMEOUT_SECONDS,
        ),
    }


def run_cases(
    bench: Bench,
    fixtures: Fixtures,
    cases: list[str],
    rounds: int,
    reference: Peer | None = None,
    baseline: Peer | None = None,
) -> list[CaseResult]:
    reader = fixtures.reader
    loads = service_loads(fixtures)
    workers = bench.server.workers
    results: dict[str, CaseResult] = {}

    def simple(case: str, load: Load, seconds: float | None = None, repeat: int = 1) -> CaseResult:
        print(f"bench: {workers} worker(s): {CASE_HELP.get(case, case)} ...", flush=True)
        # Ours, and the baseline and the reference app when they have this case: each checked and warmed, then
        # measured in turns (ours, baseline, reference, ours, ...), so that what the rest of the machine does
        # meanwhile hits them alike.
        apps = [(bench, load)]
        peers = {
            name: peer
            for name, peer in (("baseline", baseline), ("reference", reference))
            if peer is not None and case in peer.cases
        }
        for peer in peers.values():
            print(f"bench: {workers} worker(s): ... and {peer.label}, in turns", flush=True)
            apps.append((peer.bench, peer.loads[case]))
        for app_bench, app_load in apps:
            app_bench.check(app_load)
            app_bench.warm(app_load)
        runs: list[list[Measure]] = [[] for _ in apps]
        for _ in range(repeat):
            for (app_bench, app_load), app_runs in zip(apps, runs, strict=True):
                app_runs.append(app_bench.measure(app_load, seconds))
                app_bench.settle()
        median, spread = _median_run(runs[0])
        result = CaseResult(case, workers, median)
        if repeat > 1:
            result.extra["per_app_cpu_s_runs"] = spread
        peer_runs = dict(zip(peers, runs[1:], strict=True))
        if "baseline" in peer_runs:
            result.extra["baseline"] = _ab(runs[0], peer_runs["baseline"])
        if "reference" in peer_runs:
            ref_median, ref_spread = _median_run(peer_runs["reference"])
            result.extra["reference"] = {
                "measure": asdict(ref_median),
                "per_app_cpu_s_runs": ref_spread if repeat > 1 else None,
                # ours / reference, per app CPU-second: the same-run ratio the targets are read against
                "ratio": (median.per_app_cpu_s or 0) / ref_median.per_app_cpu_s if ref_median.per_app_cpu_s else None,
            }
        return result

    for case in cases:
        if case == "login":
            # Logins complete in batches while 16 hashes share 2 cores: a longer run evens that out.
            results[case] = simple(case, loads[case], max(bench.duration, LOGIN_MIN_SECONDS))
        elif case in loads:
            results[case] = simple(case, loads[case], repeat=bench.repeat)
        if case == "login":
            measure = results[case].measure
            assert measure is not None
            # The bound is measured right after the flood, on the same (possibly shared) machine.
            hash_seconds = bcrypt_seconds(rounds)
            bound_per_s = CPUS / hash_seconds
            results[case].extra = {
                "hash_ms": round(hash_seconds * 1000, 1),
                "bound_per_s": round(bound_per_s, 2),
                "of_bound": measure.rps / bound_per_s,
                # Logins per app CPU-second against one hash's time: how little a login costs beyond its hash,
                # a figure that holds up when others share the machine and the bound's cores are not all ours.
                "per_cpu_of_hash": (measure.per_app_cpu_s or 0) * hash_seconds,
            }
        elif case == "flood":
            print(f"bench: {workers} worker(s): {CASE_HELP[case]} ...", flush=True)
            read = Load(
                loads["get"].path,
                token=reader.token,
                connections=READER_CONNECTIONS,
                threads=1,
                delay_ms=READER_DELAY_MS,
            )
            bench.check(read)
            bench.warm(read)
            idle = bench.measure(read)
            flood_seconds = bench.duration + bench.warmup + 2
            flood = bench.start(loads["login"], flood_seconds)
            try:
                time.sleep(min(2.0, bench.warmup + 1))  # let the flood fill the server first
                busy = bench.measure(read)
            finally:
                login_during = bench.finish(flood, flood_seconds)
                bench.settle()
            results[case] = CaseResult(
                case,
                workers,
                busy,
                {
                    "idle_p95_ms": idle.p95_ms,
                    "flood_p95_ms": busy.p95_ms,
                    "ratio": busy.p95_ms / idle.p95_ms if idle.p95_ms else None,
                    "idle": asdict(idle),
                    "login_rps_during": round(login_during["requests"] / (login_during["duration_us"] / 1e6), 1),
                    "login_errors_during": login_during["status"] + login_during["timeout"],
                },
            )
        elif case == "list256":
            print(f"bench: {workers} worker(s): {CASE_HELP[case]}, in turns ...", flush=True)
            # 16 and 256 connections measured in turns (16, 256, 16, ...), as ours and the reference are: the
            # machine's speed drifts over minutes, so the ratio is read from runs taken side by side, not against
            # the list case measured before the logins.
            # With the baseline: ours at 16 and 256, then the baseline at 16 and 256, and again.
            sides = [(bench, loads["list"])]
            if baseline is not None and case in baseline.cases:
                print(f"bench: {workers} worker(s): ... and {baseline.label}, in turns", flush=True)
                sides.append((baseline.bench, baseline.loads["list"]))
            turns: list[tuple[Bench, Load, Load, list[Measure], list[Measure]]] = [
                (side_bench, narrow, Load(narrow.path, token=narrow.token, connections=256), [], [])
                for side_bench, narrow in sides
            ]
            for side_bench, _, wide, _, _ in turns:
                side_bench.check(wide)
                side_bench.warm(wide)
            for _ in range(bench.repeat):
                for side_bench, narrow, wide, narrow_runs, wide_runs in turns:
                    for load, load_runs in ((narrow, narrow_runs), (wide, wide_runs)):
                        load_runs.append(side_bench.measure(load))
                        side_bench.settle()
            _, _, _, narrow_runs, wide_runs = turns[0]
            narrow_rps = sorted(run.rps for run in narrow_runs)[len(narrow_runs) // 2]
            measure = sorted(wide_runs, key=lambda run: run.rps)[len(wide_runs) // 2]
            results[case] = CaseResult(
                case,
                workers,
                measure,
                {
                    "ratio": measure.rps / narrow_rps,
                    "rps_16": [round(run.rps, 1) for run in narrow_runs],
                    "rps_256": [round(run.rps, 1) for run in wide_runs],
                    # Every 256-connection run must be clean, not only the median one.
                    "errors_256": sum(run.errors for run in wide_runs),
                    "stalled_256": sum(run.probe_ms is None for run in wide_runs),
                },
            )
            if len(turns) > 1:
                # Per app CPU-second at 256 connections, each side's median run; and each side's 256 / 16 ratio.
                ab = results[case].extra["baseline"] = _ab(wide_runs, turns[1][4])
                for side, (*_, side_narrow, side_wide) in zip(("ours", "baseline"), turns, strict=True):
                    ab[side]["rps_16"] = [round(run.rps, 1) for run in side_narrow]
                    ab[side]["rps_256"] = [round(run.rps, 1) for run in side_wide]
                    ab[side]["ratio_256_16"] = statistics.median_high(
                        run.rps for run in side_wide
                    ) / statistics.median_high(run.rps for run in side_narrow)
    rss = [mb for pid in bench.server.worker_pids() if (mb := _rss_mb(pid)) is not None]
    ref_rss = (
        [mb for pid in reference.bench.server.worker_pids() if (mb := _rss_mb(pid)) is not None] if reference else []
    )
    base_rss = (
        [mb for pid in baseline.bench.server.worker_pids() if (mb := _rss_mb(pid)) is not None] if baseline else []
    )
    for result in results.values():
        result.extra.setdefault("worker_rss_mb", [round(mb) for mb in rss])
        if "reference" in result.extra:
            result.extra["reference"]["worker_rss_mb"] = [round(mb) for mb in ref_rss]
        if "baseline" in result.extra:
            result.extra["baseline"]["baseline"]["worker_rss_mb"] = [round(mb) for mb in base_rss]
    return [results[case] for case in ALL_CASES if case in results]


# ---------------------------------------------------------------------------------------------- the table


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _spread(runs: list[float] | None) -> str:
    """The other runs of a repeated case, as (lowest-highest)."""
    return f" ({_fmt(runs[0])}-{_fmt(runs[-1])})" if runs else ""


def table(results: list[CaseResult]) -> str:
    head = (
        "case",
        "W",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "non2xx/sock/tmo",
        "app CPU s",
        "req/app-CPU-s",
        "reference, this run",
        "same-run ratio",
        "template, issue 6",
        "ratio to issue 6",
        "target",
        "",
        "others' CPU",
    )
    rows: list[tuple[str, ...]] = [head]
    for result in results:
        m = result.measure
        if m is None:
            continue
        template_rps, template_cpu = TEMPLATE.get(result.case, (None, None))
        label = CASE_HELP[result.case].split(" (")[0]
        reference, same_run, template, ratio, target, verdict = "-", "-", "-", "-", "-", ""
        if result.case in REFERENCE_CASES:
            fixed_ratio = m.per_app_cpu_s / template_cpu if template_cpu and m.per_app_cpu_s else None
            same_run_ratio = None
            if ref := result.extra.get("reference"):
                reference = _fmt(ref["measure"]["per_app_cpu_s"]) + _spread(ref["per_app_cpu_s_runs"])
                same_run_ratio = ref["ratio"]
                same_run = f"{same_run_ratio:.2f}x" if same_run_ratio is not None else "-"
            if fixed_ratio is not None:
                template, ratio = _fmt(template_cpu), f"{fixed_ratio:.2f}x"
            if goal := TARGET_RATIO.get(result.case):
                # The same-run ratio when the reference was measured; else the fixed figures', marked as such.
                target = f">= {goal:.0f}x"
                against, mark = (same_run_ratio, "") if same_run_ratio is not None else (fixed_ratio, " (issue 6)")
                if against is not None:
                    verdict = ("ok" if against >= goal else "MISS") + mark
        elif result.case == "login":
            of_bound = result.extra["of_bound"]
            template = f"{template_rps} r/s"
            bound, per_cpu = result.extra["bound_per_s"], result.extra["per_cpu_of_hash"]
            ratio = f"{of_bound:.0%} of bound {bound:.1f}/s ({per_cpu:.0%}/CPU)"
            target = f">= {LOGIN_TARGET_OF_BOUND:.0%} of bound"
            verdict = "ok" if of_bound >= LOGIN_TARGET_OF_BOUND and m.errors == 0 else "MISS"
        elif result.case == "flood":
            label = f"read p95 in login flood (idle {result.extra['idle_p95_ms']:.1f} ms)"
            ratio = f"{result.extra['ratio']:.1f}x idle" if result.extra["ratio"] is not None else "-"
            target = f"< {FLOOD_TARGET_RATIO:.0f}x idle"
            ok = result.extra["ratio"] is not None and result.extra["ratio"] < FLOOD_TARGET_RATIO
            verdict = "ok" if ok and m.errors == 0 else "MISS"
        elif result.case == "list256":
            label = "list at 256 connections"
            ratio = f"{result.extra['ratio']:.2f}x of @16"
            target = f">= {LIST256_TARGET_RATIO:.1f}x, 0 err"
            clean = result.extra["errors_256"] == 0 and result.extra["stalled_256"] == 0
            ok = result.extra["ratio"] >= LIST256_TARGET_RATIO and clean
            verdict = "ok" if ok else "MISS"
        rows.append(
            (
                label,
                str(result.workers),
                _fmt(m.rps, 1),
                _fmt(m.p50_ms, 1),
                _fmt(m.p95_ms, 1),
                _fmt(m.p99_ms, 1),
                f"{m.non_2xx}/{m.socket_errors}/{m.timeouts}" + ("" if m.probe_ms is not None else " STALLED"),
                _fmt(m.app_cpu_s, 1),
                _fmt(m.per_app_cpu_s) + _spread(result.extra.get("per_app_cpu_s_runs")),
                reference,
                same_run,
                template,
                ratio,
                target,
                verdict,
                f"{m.other_cpu_s / (m.seconds * CPUS):.0%}" if m.seconds else "-",
            )
        )
    return _columns(rows)


def reference_lines(results: list[CaseResult]) -> list[str]:
    """The reference app's other figures, one line per case it was measured for (the table has its per-CPU one)."""
    lines = []
    for result in results:
        if (ref := result.extra.get("reference")) is None:
            continue
        m = ref["measure"]
        errors = f"{m['non_2xx']}/{m['socket_errors']}/{m['timeouts']}" + (" STALLED" if m["probe_ms"] is None else "")
        lines.append(
            f"reference, {CASE_HELP[result.case].split(' (')[0]}: {m['rps']:,.1f} req/s, p50 {m['p50_ms']:.1f} ms, "
            f"p95 {m['p95_ms']:.1f} ms, non2xx/sock/tmo {errors}, app CPU {m['app_cpu_s']:.1f} s"
        )
    return lines


def _columns(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        lines.append(" | ".join(cells).rstrip())
        if index == 0:
            lines.append("-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def ab_table(results: list[CaseResult]) -> str:
    """Ours against the baseline, both measured in this run in turns: one row per case measured for both."""
    head = (
        "case",
        "W",
        "ours req/app-CPU-s",
        "baseline req/app-CPU-s",
        "ours/baseline",
        "ours p95 ms",
        "baseline p95 ms",
        "ours non2xx/sock/tmo",
        "baseline non2xx/sock/tmo",
        "target",
        "",
        "others' CPU",
    )
    rows: list[tuple[str, ...]] = [head]
    for result in results:
        if (ab := result.extra.get("baseline")) is None:
            continue
        cells: list[str] = []
        for side in (ab["ours"], ab["baseline"]):
            runs = side["per_app_cpu_s_runs"]
            cells.append(_fmt(side["measure"]["per_app_cpu_s"]) + (_spread(runs) if len(runs) > 1 else ""))
        ratio = ab["ratio"]
        cells.append(f"{ratio:.3f}x" if ratio is not None else "-")
        cells.extend(_fmt(side["measure"]["p95_ms"], 1) for side in (ab["ours"], ab["baseline"]))
        for side in (ab["ours"], ab["baseline"]):
            stalled = f" STALLED x{side['stalled']}" if side["stalled"] else ""
            cells.append(f"{side['non_2xx']}/{side['socket_errors']}/{side['timeouts']}{stalled}")
        ours = ab["ours"]
        clean = ours["non_2xx"] + ours["socket_errors"] + ours["timeouts"] + ours["stalled"] == 0
        target, verdict = "-", ""
        if goal := AB_TARGET_RATIO.get(result.case):
            target = f">= {goal:.2f}x"
            verdict = "ok" if ratio is not None and ratio >= goal and clean else "MISS"
        elif result.case == "list256":
            target = "0 err, no stall"
            verdict = "ok" if clean else "MISS"
        label = "list at 256 connections" if result.case == "list256" else CASE_HELP[result.case].split(" (")[0]
        others = "/".join(
            f"{m['other_cpu_s'] / (m['seconds'] * CPUS):.0%}" if m["seconds"] else "-"
            for m in (ab["ours"]["measure"], ab["baseline"]["measure"])
        )
        rows.append((label, str(result.workers), *cells, target, verdict, others))
    return _columns(rows)


# ---------------------------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="./dev bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10, help="measured seconds per case (default 10)")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds before each case (default 2)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="measured runs of each throughput case; the median counts (default 3)"
    )
    parser.add_argument(
        "--workers", default=None, help="comma-separated worker counts (default 1,2; with --baseline: 1)"
    )
    parser.add_argument(
        "--cases",
        default=None,
        help=f"comma-separated, of: {', '.join(ALL_CASES)} (default: all; with --baseline: {','.join(BASELINE_CASES)})",
    )
    parser.add_argument(
        "--baseline",
        metavar="GIT_REF",
        default=None,
        help="also serve that commit of the service (exported with git archive outside the repository, on its own "
        f"database) and measure it in turns with ours for the selected cases among {', '.join(BASELINE_CASES)}: "
        "prints ours / baseline per app CPU-second (the reference app is then left out unless --reference)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL") or DEFAULT_ADMIN_URL,
        help="PostgreSQL server to create the private database on (default: $BENCH_DATABASE_URL, "
        f"$TEST_DATABASE_URL, or {DEFAULT_ADMIN_URL})",
    )
    parser.add_argument(
        "--bcrypt-rounds", type=int, default=None, help="BCRYPT_ROUNDS for the server (default: its own)"
    )
    parser.add_argument(
        "--timeout", type=float, default=5, help="a response slower than this is a timeout, seconds (default 5)"
    )
    parser.add_argument(
        "--ours",
        metavar="GIT_REF",
        default=None,
        help="serve that commit as ours instead of the working tree, exported like --baseline (an A/A check: "
        "--baseline HEAD --ours HEAD; or two commits against each other)",
    )
    parser.add_argument(
        "--reference",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with 1 worker, also measure bench/reference_app.py (the template's request path) for the selected "
        f"cases among {', '.join(REFERENCE_CASES)}, in the same run (default: on; off with --baseline)",
    )
    parser.add_argument(
        "--tagged",
        action="store_true",
        help="every task the bench creates (the reader's 100, the create case's) carries 2 tags and 3 checklist "
        "items; checked to come back from ours; a --baseline that predates tags ignores them",
    )
    parser.add_argument(
        "--hold",
        action="store_true",
        help="after seeding, print the server pid and tokens and wait for Ctrl-C (for profiling by hand)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    ab = args.baseline is not None
    cases_arg = args.cases if args.cases is not None else ",".join(BASELINE_CASES if ab else ALL_CASES)
    cases = [case.strip() for case in cases_arg.split(",") if case.strip()]
    unknown = sorted(set(cases) - set(ALL_CASES))
    if unknown:
        raise SystemExit(f"bench: unknown case(s) {', '.join(unknown)}; known: {', '.join(ALL_CASES)}")
    worker_counts = [int(count) for count in (args.workers or ("1" if ab else "1,2")).split(",")]
    with_reference = args.reference if args.reference is not None else not ab
    reference_cases = (
        [case for case in cases if case in REFERENCE_CASES] if with_reference and 1 in worker_counts else []
    )
    baseline_cases = [case for case in cases if case in BASELINE_CASES] if ab else []
    if ab and not baseline_cases:
        raise SystemExit(f"bench: --baseline needs at least one of {', '.join(BASELINE_CASES)} among --cases")
    # SIGTERM (CI, timeout) unwinds like Ctrl-C, so the server and the database are always cleaned up; SIGINT is
    # set explicitly because a shell starts background jobs with it ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)

    from todo_api.config import Settings

    rounds = args.bcrypt_rounds or Settings.model_fields["BCRYPT_ROUNDS"].default
    started = datetime.now(UTC)
    wrk = ensure_wrk()
    hash_seconds = bcrypt_seconds(rounds)
    bound = CPUS / hash_seconds
    print(
        f"bench: bcrypt cost {rounds}: one check takes {hash_seconds * 1000:.0f} ms; bound {bound:.1f} logins/s",
        flush=True,
    )
    results: list[CaseResult] = []
    baseline: Export | None = None
    ours: Export | None = None
    secret = secrets.token_urlsafe(48)  # one for every server, so the seeded tokens stay valid
    reference_secret = secrets.token_urlsafe(32)  # the template's SECRET_KEY default is this long
    try:
        with ExitStack() as stack:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="todo-bench-")))

            def new_bench(server: Server, backends: Callable[[], list[int]]) -> Bench:
                return Bench(
                    wrk, server, backends, scratch, args.duration, args.warmup, args.timeout, max(1, args.repeat)
                )

            def exported(name: str, ref: str) -> tuple[Export, str, Callable[[], list[int]]]:
                """A commit exported outside the repository, on its own database migrated by its own code."""
                into = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"todo-bench-{name}-")))
                export = export_commit(name, ref, into)
                db_url, db_backends = stack.enter_context(private_database(args.database_url, migrate=False, kind=name))
                env = service_env(
                    db_url, secret=secret, rounds=args.bcrypt_rounds, port=_free_port(), pythonpath=export.src
                )
                prepare_export(export, env)
                print(f"bench: {name} = {ref} ({export.commit[:12]}), imports {export.module_file}", flush=True)
                return export, db_url, db_backends

            if args.ours:
                ours, url, backends = exported("ours", args.ours)
            else:
                url, backends = stack.enter_context(private_database(args.database_url))
                if ab:
                    ours_env = service_env(url, secret=secret, rounds=args.bcrypt_rounds, port=_free_port())
                    ours_file = imported_todo_api(ours_env, scratch)[0]
                    print(f"bench: ours = the working tree, imports {ours_file}", flush=True)
            if reference_cases:
                # The reference app's own database: the template's tables (create_all), none of ours.
                ref_url, ref_backends = stack.enter_context(
                    private_database(args.database_url, migrate=False, kind="reference")
                )
                ref_url = reference_database_url(ref_url)
                print("bench: reference app: creating its tables, 2 users and 100 items ...", flush=True)
                ref_fixtures = seed_reference(ref_url, reference_secret, scratch)
            if ab:
                baseline, base_url, base_backends = exported("baseline", args.baseline)
            base_fixtures: Fixtures | None = None
            fixtures: Fixtures | None = None
            for workers in worker_counts:
                with ExitStack() as servers:
                    server = servers.enter_context(
                        serve(
                            url,
                            workers=workers,
                            secret=secret,
                            rounds=args.bcrypt_rounds,
                            scratch=ours.cwd if ours is not None else scratch,
                            pythonpath=ours.src if ours is not None else None,
                        )
                    )
                    if ours is not None:
                        check_export_server(server, ours)
                    if fixtures is None:
                        fixtures = seed_service(server.url, "ours", tagged=args.tagged, require_tags=True)
                    reference = None
                    if workers == 1 and reference_cases:
                        # Up next to ours (idle while ours is measured, and the other way round).
                        ref_server = servers.enter_context(
                            serve_reference(ref_url, secret=reference_secret, scratch=scratch)
                        )
                        reference = Peer(
                            new_bench(ref_server, ref_backends),
                            reference_loads(ref_fixtures, reference_cases),
                            reference_cases,
                            "the reference app",
                        )
                    base_peer = None
                    if baseline is not None:
                        # The same settings, its own database and tree, its own scratch cwd: idle while ours runs.
                        base_server = servers.enter_context(
                            serve(
                                base_url,
                                workers=workers,
                                secret=secret,
                                rounds=args.bcrypt_rounds,
                                scratch=baseline.cwd,
                                pythonpath=baseline.src,
                                log_name="baseline",
                            )
                        )
                        check_export_server(base_server, baseline)
                        if base_fixtures is None:
                            base_fixtures = seed_service(
                                base_server.url, "baseline", tagged=args.tagged, require_tags=False
                            )
                            if base_fixtures.tasks != fixtures.tasks:
                                raise BenchError(
                                    f"the baseline's reader has {base_fixtures.tasks} tasks, ours {fixtures.tasks}"
                                )
                        base_peer = Peer(
                            new_bench(base_server, base_backends),
                            service_loads(base_fixtures),
                            baseline_cases,
                            f"the baseline ({args.baseline})",
                        )
                    if args.hold:
                        print(f"bench: serving {server.url}, pid {server.process.pid} (workers {server.pids()[1:]})")
                        print(
                            f"bench: reader {fixtures.reader.id} task {fixtures.task_id} token {fixtures.reader.token}"
                        )
                        print(f"bench: writer {fixtures.writer.id} token {fixtures.writer.token}", flush=True)
                        if reference is not None:
                            ref = reference.bench.server
                            print(f"bench: reference app {ref.url}, pid {ref.process.pid}, item {ref_fixtures.item_id}")
                            print(f"bench: reference reader token {ref_fixtures.reader_token}")
                            print(f"bench: reference writer token {ref_fixtures.writer_token}", flush=True)
                        if base_peer is not None and base_fixtures is not None:
                            base = base_peer.bench.server
                            print(f"bench: baseline {base.url}, pid {base.process.pid}, task {base_fixtures.task_id}")
                            print(
                                f"bench: baseline reader {base_fixtures.reader.id} token {base_fixtures.reader.token}"
                            )
                            print(
                                f"bench: baseline writer {base_fixtures.writer.id} token {base_fixtures.writer.token}"
                            )
                        signal.pause()
                    results.extend(
                        run_cases(new_bench(server, backends), fixtures, cases, rounds, reference, base_peer)
                    )
    except KeyboardInterrupt:
        print("bench: interrupted; server stopped and database dropped", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1

    print()
    print(table(results))
    if lines := reference_lines(results):
        print("\n" + "\n".join(lines))
    targets = ", ".join(f"{case} >= {goal:.0f}x" for case, goal in TARGET_RATIO.items())
    print(
        "\nreference, this run = bench/reference_app.py (fastapi/full-stack-fastapi-template's request path, "
        "re-created for this bench), measured\nin this run with 1 worker, in turns with ours: req per app "
        f"CPU-second. same-run ratio = ours / reference: the targets\n({targets}) are read "
        "from it. template, issue 6 = the template's backend on a comparable machine,\nnot this run (issue 6's "
        "table; login: req/s); ratio to issue 6 = ours / that. A verdict marked (issue 6) had no\nreference to "
        "go by (--no-reference, 2 workers). W = uvicorn workers; CPU counts the server's processes only."
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    if baseline is not None:
        ours_label = (
            f"{args.ours} ({ours.commit[:12]})" if ours is not None else f"the working tree ({_git_revision()})"
        )
        print(
            f"\nA/B, this run: ours = {ours_label}, baseline = {args.baseline} ({baseline.commit[:12]}), measured "
            "in turns (ours, baseline, ...)"
        )
        print(ab_table(results))
        print(
            "\nreq per app CPU-second: the median run of each side (lowest-highest of --repeat runs); list at 256 "
            "connections: the same at 256\nconnections (16 and 256 in turns on each side). non2xx/sock/tmo: summed "
            "over all runs; STALLED: runs whose probe got no answer.\ntarget: get, list, create >= 95 % of the "
            "baseline; no error and no stall at 256 connections (ours). others' CPU: the median\nruns', ours/"
            "baseline, as in the table above: when it is high, single runs are noisy (use --repeat 5 or more)."
        )
    out = RESULTS / f"{started:%Y%m%d-%H%M%S}.json"
    document = {
        "started": started.isoformat(),
        "git": _git_revision(),
        "machine": {"cpus": CPUS, "python": platform.python_version(), "load_average": os.getloadavg()},
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "repeat": args.repeat,
            "wrk_timeout_s": args.timeout,
            # every task sent carries 2 tags and 3 checklist items; whether each side gave them back
            "tagged": args.tagged,
            "returns_tags": {
                "ours": fixtures.returns_tags if fixtures is not None else None,
                "baseline": base_fixtures.returns_tags if base_fixtures is not None else None,
            }
            if args.tagged
            else None,
        },
        "bcrypt": {"rounds": rounds, "seconds": hash_seconds, "bound_per_s": bound},
        "template": TEMPLATE,
        "target_ratio": TARGET_RATIO,
        # Each result of these cases holds the reference's median run in extra["reference"], and the same-run ratio.
        "reference": {"app": "bench/reference_app.py", "workers": 1, "cases": reference_cases},
        # Each result of these cases holds extra["baseline"]: both sides' median runs and ours / baseline.
        "baseline": {
            "ref": baseline.ref,
            "commit": baseline.commit,
            "todo_api": baseline.module_file,
            "cases": baseline_cases,
            "target_ratio": AB_TARGET_RATIO,
        }
        if baseline is not None
        else None,
        # --ours: the commit served as ours instead of the working tree
        "ours": {"ref": ours.ref, "commit": ours.commit, "todo_api": ours.module_file} if ours is not None else None,
        "results": [asdict(result) for result in results],
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"bench: results written to {out.relative_to(ROOT)}")
    return 0


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _git_revision() -> str | None:
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
    except OSError:
        return None
    return done.stdout.strip() or None


if __name__ == "__main__":
    sys.exit(main())
