"""The bench driver, started by scripts/bench once the Northflank emulator (and, for
BENCH_DB=postgres|both, a Postgres cluster) is up; their addresses arrive in BENCH_* variables.
The bench runs in segments, one per worker and database kind (ours, theirs, ours_postgres,
theirs_postgres), each against a fresh Prefect server with its own counting proxy (servers.py),
one worker process alive at a time; then it writes bench/results.json and BENCHMARKS.md
(report.py). Standard library only."""

import datetime
import json
import os
import random
import signal
import subprocess
import sys
import time

from api import Emulator, Prefect, Proxy
from phases import first_request_ms, latency_phase, log, queued_phase
from phases import idle_phase, requests_phase, wait_ready
from procs import Proc
from servers import Servers, clean_env, postgres_pid
import report
import server_cost

SCALES = {
    # req: flow runs per request-count phase (short and long flows: `short`, `long` seconds);
    # lat: latency runs; tput: queued runs for throughput; rss_ours / rss_theirs: runs during
    # the memory phase, with flows of `rss_secs`; cost_runs: flow runs of the server-cost phase
    # (Postgres only). Each can be overridden: BENCH_<KEY>.
    "full": dict(req=20, lat=100, tput=500, rss_ours=1000, rss_theirs=100, short=5, long=60,
                 rss_secs=60, cost_runs=server_cost.RUNS["full"]),
    "small": dict(req=3, lat=8, tput=20, rss_ours=30, rss_theirs=5, short=5, long=15,
                  rss_secs=10, cost_runs=server_cost.RUNS["small"]),
}
DBS = ("sqlite", "postgres")


def settings():
    scale = os.environ.get("BENCH_SCALE", "full")
    if scale not in SCALES:
        sys.exit(f"BENCH_SCALE must be one of {', '.join(SCALES)}")
    cfg = dict(SCALES[scale], scale=scale)
    for key in list(cfg):
        if key != "scale" and os.environ.get(f"BENCH_{key.upper()}"):
            cfg[key] = int(os.environ[f"BENCH_{key.upper()}"])
    cfg["poll_interval"] = int(os.environ.get("BENCH_POLL_INTERVAL", "10"))
    cfg["instant_poll_interval"] = int(os.environ.get("BENCH_INSTANT_POLL_INTERVAL", "60"))
    cfg["only"] = os.environ.get("BENCH_ONLY", "both")
    cfg["db"] = os.environ.get("BENCH_DB", "both")
    cfg["pg_phases"] = os.environ.get("BENCH_PG_PHASES") or (
        "all" if cfg["db"] == "postgres" else "throughput")
    cfg["ours_env"] = ours_env()
    for key, allowed in (("only", ("both", "ours", "theirs")), ("db", ("both", *DBS)),
                         ("pg_phases", ("throughput", "all"))):
        if cfg[key] not in allowed:
            sys.exit(f"BENCH_{key.upper()}={cfg[key]!r} is invalid: must be one of "
                     f"{', '.join(allowed)}")
    return cfg


def ours_env():
    """BENCH_OURS_ENV: extra settings for our worker, as space-separated NAME=VALUE (e.g.
    `PFNF_MAX_CONCURRENCY=20`), to find what limits it."""
    out = {}
    for item in os.environ.get("BENCH_OURS_ENV", "").split():
        name, sep, value = item.partition("=")
        if not sep or not name.startswith(("PFNF_", "RUST_")):
            sys.exit(f"BENCH_OURS_ENV item {item!r} is invalid: must be NAME=VALUE with a "
                     "PFNF_ or RUST_ name")
        out[name] = value
    return out


def segments(cfg):
    """(segment, worker, database kind, every phase or only the throughput) in running order.
    SQLite runs every phase; Postgres those BENCH_PG_PHASES names."""
    sides = [s for s in ("ours", "theirs") if cfg["only"] in ("both", s)]
    out = []
    for db in DBS:
        if cfg["db"] not in ("both", db):
            continue
        every = db == "sqlite" or cfg["pg_phases"] == "all"
        out += [(report.segment(side, db), side, db, every) for side in sides]
    return out


class Side:
    """One worker under test: its pool, project, token, proxy port and deployments."""

    def __init__(self, ctx, name, proxy_port, poll_interval, extra_vars, argv, env):
        self.ctx, self.name = ctx, name
        self.pool = self.project = f"bench-{name}"
        self.proxy = Proxy(proxy_port)
        self.poll_interval = poll_interval
        self.extra_vars, self.argv, self.env = extra_vars, argv, env
        self.deployments = {}

    def deployment(self, script):
        if script not in self.deployments:
            variables = {
                "project_id": self.project,
                # The emulator acts out the script; its engine emulation reports the flow's
                # states to Prefect directly, not through this worker's proxy.
                "env": {"NF_EMULATOR_SCRIPT": script, "PREFECT_API_URL": self.ctx.api},
                **self.extra_vars,
            }
            name = f"{self.name}-{script.replace(':', '-').replace('.', '-')}"
            self.deployments[script] = self.ctx.prefect.ensure_deployment(
                self.ctx.flow_id, name, self.pool, variables)
        return self.deployments[script]

    def worker(self, label, **env):
        return Proc(f"{self.name}-{label}", self.argv, {**self.env, **env},
                    os.path.join(self.ctx.run_dir, f"worker-{self.ctx.segment}.log"))


class Ctx:
    """One segment: its Prefect server (direct, never through the proxy, so the bench's own
    requests are not counted as the worker's) and the processes whose CPU time is measured."""

    def __init__(self, servers):
        self.segment, self.db = servers.segment, servers.db
        self.api = servers.api
        self.prefect = Prefect(self.api)
        self.server_pid = servers.pid
        self.postgres_pid = postgres_pid() if servers.db == "postgres" else None
        self.emulator_url = os.environ["BENCH_EMULATOR_URL"]
        self.emulator = Emulator(self.emulator_url)
        self.run_dir = os.environ["BENCH_RUN_DIR"]
        # The same seed in every segment: both workers see the same random gaps.
        self.rng = random.Random(int(os.environ.get("BENCH_SEED", "1")))
        self.flow_id = self.prefect.ensure_flow("bench-flow")


def run_cli(argv, env, what):
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return done.stdout


def setup_ours(ctx, cfg, proxy_port):
    binary = os.environ["BENCH_OURS_BIN"]
    hook = int(os.environ["BENCH_HOOK_PORT"])
    env = {**clean_env(),
           "PREFECT_API_URL": f"http://127.0.0.1:{proxy_port}/api",
           "PFNF_WORK_POOL": "bench-ours",
           "NORTHFLANK_API_URL": ctx.emulator_url,
           "NORTHFLANK_API_TOKEN": os.environ["BENCH_OURS_TOKEN"],
           "PFNF_WEBHOOK_TOKEN": os.environ["BENCH_WEBHOOK_TOKEN"],
           "PFNF_WORKER_NAME": "prefect-nf-bench",
           "PFNF_POLL_INTERVAL": str(cfg["poll_interval"]),
           "RUST_LOG": os.environ.get("BENCH_RUST_LOG", "info"),
           **cfg["ours_env"]}
    side = Side(ctx, "ours", proxy_port, cfg["poll_interval"], {},
                [binary, "local", "--bind", f"127.0.0.1:{hook}"], env)
    # Setup requests go to Prefect directly, so the proxy counts only the worker's own.
    direct = {**env, "PREFECT_API_URL": ctx.api}
    run_cli([binary, "work-pool", "create", "--name", side.pool, "--project-id", side.project],
            direct, "prefect-nf work-pool create")
    run_cli([binary, "webhook", "register", "--url", f"http://127.0.0.1:{hook}/northflank/webhook",
             "--project-id", side.project, "--name", "prefect-nf-bench"], direct,
            "prefect-nf webhook register")
    side.binary, side.hook_url, side.direct_env = binary, f"http://127.0.0.1:{hook}", direct
    return side


def setup_theirs(ctx, cfg, proxy_port):
    python, prefect = os.environ["BENCH_THEIRS_PYTHON"], os.environ["BENCH_THEIRS_PREFECT"]
    home = os.path.join(ctx.run_dir, f"{ctx.segment}-home")
    os.makedirs(home, exist_ok=True)
    env = {**clean_env(), "PREFECT_HOME": home,
           "PREFECT_API_URL": f"http://127.0.0.1:{proxy_port}/api",
           "PREFECT_WORKER_QUERY_SECONDS": str(cfg["poll_interval"])}
    out = run_cli([python, os.path.join(os.path.dirname(__file__), "theirs_setup.py"),
                   "--block", "bench-theirs", "--token", os.environ["BENCH_THEIRS_TOKEN"],
                   "--base-url", ctx.emulator_url],
                  {**env, "PREFECT_API_URL": ctx.api}, "prefect-northflank block setup")
    setup = json.loads(out.strip().splitlines()[-1])
    # The credentials block as the pool's default, by reference, as the UI stores a selected
    # block. (A `$ref` in a deployment's job variables is refused by the server's validation:
    # it matches more than one branch of the variable's `oneOf`.)
    template = setup["template"]
    template["variables"]["properties"]["credentials"]["default"] = {
        "$ref": {"block_document_id": setup["block_document_id"]}}
    side = Side(ctx, "theirs", proxy_port, cfg["poll_interval"], {},
                [prefect, "worker", "start", "--type", "northflank", "--pool", "bench-theirs",
                 "--name", "prefect-northflank-bench", "--install-policy", "never"], env)
    ctx.prefect.create_pool(side.pool, "northflank", template)
    return side


def start_measured(side, label, **env):
    """Starts a worker with a fresh proxy count, waits for its first poll, and returns it with
    the start → first Prefect request time."""
    side.proxy.reset()
    worker = side.worker(label, **env).start()
    try:
        wait_ready(side.ctx, side, worker)
    except BaseException:
        worker.stop()
        raise
    return worker, first_request_ms(side, worker)


def guarded(results, key, fn, *args, **kwargs):
    """Runs one phase; a failure is recorded under its key and the bench goes on."""
    try:
        results[key] = fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - any failure of one phase is reported, not fatal
        log(f"phase {key} failed: {type(e).__name__}: {e}")
        results[key] = {"error": str(e)}
    return results[key]


def bench_side(ctx, cfg, side, out, every):
    """One worker on a fresh server. The queued batch first, so both workers' throughput and
    server CPU are measured on a server holding nothing else; then (when `every`) request
    counts for short and long flows and dispatch latency in the same process (whose start is
    timed), ours' instant dispatch, and memory in a fresh process."""
    guarded(out, "idle", idle_phase, ctx)
    worker, out["first_request_ms"] = start_measured(side, "main")
    with worker:
        guarded(out, "throughput", queued_phase, ctx, side, worker, cfg["tput"], cfg["short"])
        if not every:
            return
        guarded(out, "requests_short", requests_phase, ctx, side, cfg["short"], cfg["req"])
        guarded(out, "requests_long", requests_phase, ctx, side, cfg["long"], cfg["req"])
        guarded(out, "latency", latency_phase, ctx, side, cfg["lat"])
    if side.name == "ours":
        guarded(out, "instant", bench_instant, ctx, cfg, side)
    # A fresh process, so its memory reflects this phase alone.
    worker, _ = start_measured(side, "rss")
    with worker:
        guarded(out, "rss", queued_phase, ctx, side, worker, cfg[f"rss_{side.name}"],
                cfg["rss_secs"], sample_rss=True, label="rss")


def automation_actions(ctx, since):
    """How the Prefect server's automation actions went since `since` (ISO time): its
    `prefect.automation.action.executed` and `.failed` events, e.g. {"executed": 100,
    "failed": 0}. A failed call-webhook action is not retried, so its run waits for a later
    call or the next tick; the server does not log these failures, its events hold them."""
    counts = {}
    for outcome in ("executed", "failed"):
        page = ctx.prefect.call("POST", "/events/filter", {
            "filter": {"event": {"name": [f"prefect.automation.action.{outcome}"]},
                       "occurred": {"since": since}},
            "limit": 1,
        })
        counts[outcome] = page.get("total", 0)
    return counts


def bench_instant(ctx, cfg, side):
    """Instant dispatch: a long poll interval, and Prefect's automation calling our webhook
    server (`POST <url>/prefect/dispatch` with the dispatch token) when a run of the pool becomes
    Scheduled. The subcommand is new; a build without it gets a null figure and the reason."""
    probe = subprocess.run([side.binary, "instant-dispatch", "--help"], capture_output=True,
                           text=True, timeout=30)
    if probe.returncode != 0:
        reason = "`prefect-nf instant-dispatch` does not exist in this build"
        log(f"ours: instant dispatch skipped: {reason}")
        return {"error": reason, "p95_s": None}
    token = {"PFNF_DISPATCH_TOKEN": "dispatch-" + os.environ["BENCH_WEBHOOK_TOKEN"]}
    cli_env = {**side.direct_env, **token}
    try:
        run_cli([side.binary, "instant-dispatch", "enable", "--url", side.hook_url,
                 "--pool", side.pool], cli_env, "prefect-nf instant-dispatch enable")
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        log(f"ours: instant dispatch skipped: {e}")
        return {"error": str(e), "p95_s": None}
    out, interval = {}, cfg["instant_poll_interval"]
    since = datetime.datetime.now(datetime.timezone.utc).isoformat()
    try:
        worker, _ = start_measured(side, "instant", PFNF_POLL_INTERVAL=str(interval), **token)
        side.poll_interval = interval
        with worker:
            guarded(out, "instant", latency_phase, ctx, side, cfg["lat"], label="instant")
        # Events reach the server's store a few seconds late: wait for one per run.
        for _ in range(30):
            actions = automation_actions(ctx, since)
            if actions["executed"] + actions["failed"] >= cfg["lat"]:
                break
            time.sleep(1)
        out["instant"]["automation_calls"] = actions["executed"] + actions["failed"]
        out["instant"]["automation_calls_failed"] = actions["failed"]
    finally:
        side.poll_interval = cfg["poll_interval"]
        try:
            run_cli([side.binary, "instant-dispatch", "disable", "--pool", side.pool], cli_env,
                    "prefect-nf instant-dispatch disable")
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            log(f"ours: {e}; deleting the automations directly")
            ctx.prefect.delete_automations()
    return {**out["instant"], "poll_interval_s": interval}


def run_segment(cfg, segment, name, db, every, out):
    """A fresh Prefect server (and proxy) for one worker on one database kind, the worker's
    setup on it, its phases, and the server stopped."""
    log(f"{segment}: starting a fresh Prefect server ({db})")
    with Servers(segment, name, db, os.environ["BENCH_RUN_DIR"]) as servers:
        ctx = Ctx(servers)
        out["server"] = {"db": db, "phases": "all" if every else "throughput"}
        setup = setup_ours if name == "ours" else setup_theirs
        side = setup(ctx, cfg, servers.proxy_port)
        bench_side(ctx, cfg, side, out, every)


def run_server_cost(cfg, details, errors):
    """The server's CPU by request kind (server_cost.py) on a fresh Postgres-backed server of its
    own, after the workers' segments; its per-run predictions use this run's request counts."""
    log("server-cost: starting a fresh Prefect server (postgres)")
    try:
        with Servers("server-cost", "cost", "postgres", os.environ["BENCH_RUN_DIR"]) as servers:
            measured = server_cost.measure(servers.api, servers.pid, postgres_pid(),
                                           cfg["cost_runs"])
    except Exception as e:  # noqa: BLE001 - reported, the rest of the figures still written
        log(f"server-cost: {type(e).__name__}: {e}")
        errors.append(f"server-cost: {type(e).__name__}: {e}")
        return None
    this_run = {"details": details, "date": "this run", **report.headline(cfg, details)}
    return server_cost.result(measured, this_run)


def main():
    # `timeout` and scripts/bench's trap end the driver with TERM, through its finally blocks,
    # which stop the workers. SIGINT gets Python's handler back: started in the background by a
    # script, the driver inherits it ignored, and so would the workers, whom stop() interrupts.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cfg = settings()
    started = time.time()
    details, errors = {}, []
    cost = None
    finished = False
    try:
        for segment, name, db, every in segments(cfg):
            out = details.setdefault(segment, {})
            try:
                run_segment(cfg, segment, name, db, every, out)
            except Exception as e:  # noqa: BLE001 - one segment failing still lets the rest run
                log(f"{segment}: {type(e).__name__}: {e}")
                out["error"] = f"{type(e).__name__}: {e}"
                errors.append(f"{segment}: {type(e).__name__}: {e}")
        if cfg["db"] != "sqlite":
            cost = run_server_cost(cfg, details, errors)
        finished = True
    except Exception as e:  # noqa: BLE001 - recorded in the report, then re-raised
        errors.append(f"{type(e).__name__}: {e}")
        raise
    finally:
        cfg["bench_duration_s"] = round(time.time() - started)
        # A stopped or crashed run keeps its partial figures beside its logs.
        report.write(cfg, details, errors, None if finished else os.environ["BENCH_RUN_DIR"],
                     server_cost=cost)


if __name__ == "__main__":
    main()
