"""The Prefect server's CPU cost of each kind of request a worker (or a flow) sends, measured
directly: a fresh Prefect 3.9.1 server on a fresh database of scripts/bench's Postgres cluster,
N scheduled flow runs, then one step per request kind across all N runs (8 requests in flight,
like a worker's burst), the server's process tree's CPU time (and, apart, Postgres') read
before each step and again once the server is idle again, so that deferred work (event
persistence, triggers, the services) is counted in the step that caused it. The idle rate
measured before the first step is taken out of every step. From the costs and each worker's
per-run request counts (the last full bench's Postgres throughput phase), the per-run server
CPU of each worker is predicted, and the ratio ours / theirs, and the ratio ours would reach
if it made only the protocol's four writes.

Run by scripts/bench after the segments when Postgres is used, or alone:
`BENCH_ONLY_PHASE=server-cost scripts/bench`. Standard library only."""

import collections
import concurrent.futures
import datetime
import http.client
import json
import os
import re
import sys
import threading
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from api import Prefect  # noqa: E402
from procs import cpu_seconds  # noqa: E402

RUNS = {"full": 200, "small": 30}
CONCURRENCY = 8
# One poll per this many runs; each asks for twice as many, as ours does with free slots.
POLL_EVERY = 20
# Our worker's log lines and events per flow run, and how many runs' worth one batched
# request carries (the throughput phase saw ~53 lines and ~17 events per request).
OUR_LOG_LINES = 6
OUR_EVENTS = 2
BATCH_RUNS = 10
# Deferred work: the event persister flushes at least every 5 s (Prefect 3.9.1's default), so
# no step ends sooner than this after its last answer; then the server (and Postgres) must
# have been back near their idle rate for QUIET seconds, within BOUND. BENCH_COST_SETTLE
# lengthens the first wait, to check that nothing deferred is missed.
MIN_SETTLE = float(os.environ.get("BENCH_COST_SETTLE") or 6.0)
QUIET = 2.0
BOUND = 60.0
MARGIN = 0.05  # CPU seconds per second above the idle rate that still counts as idle

PROTOCOL = ("pending", "labels", "submitting", "infra_pid")
FLOW = ("running", "completed")
# Steps in running order: (kind, what it is). Reads of the Python worker after the writes.
KINDS = [
    ("poll", "POST /work_pools/{pool}/get_scheduled_flow_runs (limit 2 × 20 runs)"),
    ("pending", "POST /flow_runs/{id}/set_state PENDING (the claim)"),
    ("labels", "PATCH /flow_runs/{id}/labels (4 worker labels)"),
    ("submitting", "POST /flow_runs/{id}/set_state PENDING \"Submitting\""),
    ("infra_pid", "PATCH /flow_runs/{id} infrastructure_pid"),
    ("running", "POST /flow_runs/{id}/set_state RUNNING (the flow's engine)"),
    ("completed", "POST /flow_runs/{id}/set_state COMPLETED (the flow's engine)"),
    ("read_deployment", "GET /deployments/{id}"),
    ("read_flow", "GET /flows/{id}"),
    ("read_block", "GET /block_documents/{id}?include_secrets=true"),
    ("logs_batched", f"POST /logs/, {OUR_LOG_LINES * BATCH_RUNS} lines ({BATCH_RUNS} runs' worth)"),
    ("logs_single", "POST /logs/, 1 line"),
    ("events", f"POST /events, {OUR_EVENTS * BATCH_RUNS} worker events ({BATCH_RUNS} runs' worth)"),
]

# Per-run Prefect requests of each worker in the last full bench's Postgres throughput phase
# (500 runs), used when bench/results.json has none.
DEFAULT_COMPOSITION = {
    "ours": {"endpoints": {"GET /api/deployments/{id}": 0.014, "GET /api/flows/{id}": 0.002,
                           "GET /api/work_pools/{pool}": 0.004, "PATCH /api/flow_runs/{id}": 1.0,
                           "PATCH /api/flow_runs/{id}/labels": 1.0, "POST /api/events": 0.118,
                           "POST /api/flow_runs/filter": 0.004,
                           "POST /api/flow_runs/{id}/set_state": 2.0, "POST /api/logs/": 0.114,
                           "POST /api/work_pools/{pool}/get_scheduled_flow_runs": 0.112,
                           "POST /api/work_pools/{pool}/workers/heartbeat": 0.004},
             "log_lines": 6.0, "source": "defaults"},
    "theirs": {"endpoints": {"GET /api/block_documents/{id}": 1.0, "GET /api/csrf-token": 0.002,
                             "GET /api/deployments/{id}": 2.0, "GET /api/flows/{id}": 1.0,
                             "PATCH /api/flow_runs/{id}": 1.0,
                             "PATCH /api/flow_runs/{id}/labels": 1.0,
                             "POST /api/flow_runs/{id}/set_state": 2.0, "POST /api/logs/": 0.11,
                             "POST /api/work_pools/{pool}/get_scheduled_flow_runs": 0.018},
               "log_lines": 12.0, "source": "defaults"},
}
POOL = re.compile(r"/work_pools/[^/]+")


def log(msg):
    print(f"[server-cost {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def now_iso(offset_s=0.0):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset_s)
    return t.isoformat().replace("+00:00", "Z")


class Client:
    """Keep-alive connections, one per thread, as a worker's connection pool keeps them."""

    def __init__(self, api):
        u = urllib.parse.urlsplit(api)
        self.host, self.port, self.prefix = u.hostname, u.port, u.path.rstrip("/")
        self.local = threading.local()

    def _conn(self):
        if getattr(self.local, "conn", None) is None:
            self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        return self.local.conn

    def call(self, method, path, body=None):
        """(status, parsed body); a dropped connection or a 503 is tried again."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in range(6):
            try:
                conn = self._conn()
                conn.request(method, self.prefix + path, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException):
                self.local.conn = None
                if attempt == 5:
                    raise
                time.sleep(0.2)
                continue
            if response.status in (429, 502, 503) and attempt < 5:
                time.sleep(0.5 * (attempt + 1))
                continue
            try:
                parsed = json.loads(raw) if raw.strip() else None
            except ValueError:
                parsed = None
            return response.status, parsed
        raise RuntimeError("unreachable")


class Meter:
    """The server's and Postgres' CPU seconds (process trees, procs.py), with the time."""

    def __init__(self, server_pid, postgres_pid):
        self.server_pid, self.postgres_pid = server_pid, postgres_pid

    def read(self):
        pg = cpu_seconds(self.postgres_pid) if self.postgres_pid else 0.0
        return time.time(), cpu_seconds(self.server_pid), pg


def settle(meter, idle, min_wait=MIN_SETTLE, quiet=QUIET, bound=BOUND, margin=MARGIN):
    """Waits until both trees have been back near their idle rates for `quiet` seconds, at least
    `min_wait` seconds from now and at most `bound`. Returns (seconds waited, idle reached)."""
    start = time.time()
    samples = collections.deque()
    while True:
        t, s, p = meter.read()
        samples.append((t, s, p))
        while len(samples) > 2 and samples[1][0] <= t - quiet:
            samples.popleft()
        t0, s0, p0 = samples[0]
        if t - start >= min_wait and t - t0 >= quiet:
            rate_s, rate_p = (s - s0) / (t - t0), (p - p0) / (t - t0)
            if rate_s <= idle["server"] + margin and rate_p <= idle["postgres"] + margin:
                return round(t - start, 2), True
        if t - start >= bound:
            return round(t - start, 2), False
        time.sleep(0.25)


def measure_idle(meter, secs=12.0):
    t0, s0, p0 = meter.read()
    time.sleep(secs)
    t1, s1, p1 = meter.read()
    return {"server": round((s1 - s0) / (t1 - t0), 4), "postgres": round((p1 - p0) / (t1 - t0), 4)}


def state_body(kind, name, run_id):
    return {"state": {"type": kind, "name": name, "message": None, "data": None,
                      "state_details": {"flow_run_id": run_id, "transition_id": str(uuid.uuid4()),
                                        "untrackable_result": False, "pause_reschedule": False}},
            "force": False}


def engine_state_body(kind, name):
    """As the flow's engine (and the emulator's engine emulation) proposes its own states."""
    return {"state": {"type": kind, "name": name, "message": None, "data": None,
                      "state_details": {"transition_id": str(uuid.uuid4())}}, "force": False}


def log_line(run_id, message):
    return {"name": "prefect.flow_runs.worker", "level": 20, "message": message,
            "timestamp": now_iso(), "flow_run_id": run_id, "task_run_id": None}


def our_lines(run_id, i):
    job = f"pf-{run_id}"
    return [log_line(run_id, m) for m in (
        f"Worker 'prefect-nf-bench' submitting flow run '{run_id}'",
        f"Flow run 'bench-cost-{i}' submitted to infrastructure",
        f"Northflank job '{job}' in project 'bench-cost' started run 'run-{i}': "
        f"https://app.northflank.com/t/team/project/bench-cost/jobs/{job}",
        f"Northflank run 'run-{i}' of job '{job}' succeeded",
        f"The flow run is COMPLETED and its Northflank run 'run-{i}' has concluded",
        f"Deleted Northflank job '{job}' in project 'bench-cost'")]


def our_events(setup, run_id, i):
    """Ours' submitted-flow-run and executed-flow-run events (src/prefect/events.rs)."""
    def event(name, eid, follows, extra):
        run = {"prefect.resource.id": f"prefect.flow-run.{run_id}",
               "prefect.resource.role": "flow-run", "prefect.resource.name": f"bench-cost-{i}",
               **extra}
        return {"occurred": now_iso(), "event": name,
                "resource": {"prefect.resource.id": "prefect.worker.northflank.prefect-nf-bench",
                             "prefect.resource.name": "prefect-nf-bench",
                             "prefect.worker-type": "northflank", "prefect-nf.version": "0.1.0"},
                "related": [
                    {"prefect.resource.id": f"prefect.deployment.{setup['deployment']}",
                     "prefect.resource.role": "deployment"},
                    {"prefect.resource.id": f"prefect.flow.{setup['flow']}",
                     "prefect.resource.role": "flow"},
                    run,
                    {"prefect.resource.id": "prefect.tag.bench-cost",
                     "prefect.resource.role": "tag"},
                    {"prefect.resource.id": f"prefect.work-pool.{setup['pool_id']}",
                     "prefect.resource.role": "work-pool", "prefect.resource.name": setup["pool"]},
                ],
                "payload": {}, "id": eid, "follows": follows}
    submitted = str(uuid.uuid4())
    pid = f"bench-cost:pf-{run_id}:run-{i}"
    return [event("prefect.worker.submitted-flow-run", submitted, None, {}),
            event("prefect.worker.executed-flow-run", str(uuid.uuid4()), submitted,
                  {"prefect.infrastructure.identifier": pid,
                   "prefect.infrastructure.status-code": "0"})]


def chunks(items, size):
    return [items[i:i + size] for i in range(0, len(items), size)]


def requests_for(kind, setup, runs):
    """The requests of one step: a list of (method, path, body, items it carries)."""
    ids = [r for r in runs]
    if kind == "poll":
        body = lambda: {"work_queue_names": [], "scheduled_before": now_iso(10),  # noqa: E731
                        "limit": 2 * POLL_EVERY}
        n = max(1, round(len(ids) / POLL_EVERY))
        return [("POST", f"/work_pools/{setup['pool']}/get_scheduled_flow_runs", body(), 1)
                for _ in range(n)]
    if kind == "pending":
        return [("POST", f"/flow_runs/{r}/set_state", state_body("PENDING", "Pending", r), 1)
                for r in ids]
    if kind == "labels":
        labels = {"prefect.worker.name": "prefect-nf-bench", "prefect.worker.type": "northflank",
                  "prefect.work-pool.name": setup["pool"], "prefect.work-pool.id": setup["pool_id"]}
        return [("PATCH", f"/flow_runs/{r}/labels", labels, 1) for r in ids]
    if kind == "submitting":
        return [("POST", f"/flow_runs/{r}/set_state", state_body("PENDING", "Submitting", r), 1)
                for r in ids]
    if kind == "infra_pid":
        return [("PATCH", f"/flow_runs/{r}", {"infrastructure_pid": f"bench-cost:pf-{r}:run-{i}"},
                 1) for i, r in enumerate(ids)]
    if kind == "running":
        return [("POST", f"/flow_runs/{r}/set_state", engine_state_body("RUNNING", "Running"), 1)
                for r in ids]
    if kind == "completed":
        return [("POST", f"/flow_runs/{r}/set_state", engine_state_body("COMPLETED", "Completed"),
                 1) for r in ids]
    if kind == "read_deployment":
        return [("GET", f"/deployments/{setup['deployment']}", None, 1) for _ in ids]
    if kind == "read_flow":
        return [("GET", f"/flows/{setup['flow']}", None, 1) for _ in ids]
    if kind == "read_block":
        return [("GET", f"/block_documents/{setup['block']}?include_secrets=true", None, 1)
                for _ in ids]
    if kind == "logs_batched":
        lines = [line for i, r in enumerate(ids) for line in our_lines(r, i)]
        return [("POST", "/logs/", c, len(c)) for c in chunks(lines, OUR_LOG_LINES * BATCH_RUNS)]
    if kind == "logs_single":
        return [("POST", "/logs/", [log_line(r, f"Worker 'py-worker' submitting flow run '{r}'")],
                 1) for r in ids]
    if kind == "events":
        events = [e for i, r in enumerate(ids) for e in our_events(setup, r, i)]
        return [("POST", "/events", c, len(c)) for c in chunks(events, OUR_EVENTS * BATCH_RUNS)]
    raise ValueError(kind)


def run_step(client, pool, meter, idle, kind, requests):
    """One step: its requests, 8 in flight; CPU read before and once idle again."""
    statuses, outcomes = collections.Counter(), collections.Counter()

    def one(req):
        method, path, body, _ = req
        status, answer = client.call(method, path, body)
        # set_state's OrchestrationResult: ACCEPT, REJECT, ABORT or WAIT.
        is_result = isinstance(answer, dict) and "status" in answer and "details" in answer
        outcome = answer["status"] if is_result else None
        return status, outcome

    t0, s0, p0 = meter.read()
    for status, outcome in pool.map(one, requests):
        statuses[str(status)] += 1
        if outcome:
            outcomes[outcome] += 1
    busy = time.time() - t0
    waited, reached = settle(meter, idle)
    t1, s1, p1 = meter.read()
    n, wall = len(requests), t1 - t0
    server = (s1 - s0) - idle["server"] * wall
    postgres = (p1 - p0) - idle["postgres"] * wall
    out = {"requests": n, "items": sum(r[3] for r in requests), "statuses": dict(statuses),
           "busy_s": round(busy, 2), "settle_s": waited, "idle_reached": reached,
           "wall_s": round(wall, 2), "server_cpu_s": round(s1 - s0, 3),
           "postgres_cpu_s": round(p1 - p0, 3),
           "server_ms": round(server * 1000 / n, 2), "postgres_ms": round(postgres * 1000 / n, 2)}
    if outcomes:
        out["orchestration"] = dict(outcomes)
    return out


def setup_server(prefect, n):
    """A flow, a pool of type northflank, a deployment in it, a credentials-like block document
    with a secret field (what the Python worker reads per run), and n scheduled runs."""
    flow = prefect.ensure_flow("bench-cost-flow")
    pool = "bench-cost"
    prefect.create_pool(pool, "northflank", {})
    pool_id = prefect.call("GET", f"/work_pools/{pool}")["id"]
    deployment = prefect.ensure_deployment(flow, "bench-cost", pool, {"project_id": "bench-cost"})
    block = None
    try:
        block_type = prefect.call("POST", "/block_types/", {
            "name": "Bench Cost Credentials", "slug": "bench-cost-credentials"})["id"]
        schema = prefect.call("POST", "/block_schemas/", {
            "fields": {"title": "BenchCostCredentials", "type": "object",
                       "properties": {"api_token": {"title": "Api Token", "type": "string",
                                                    "format": "password", "writeOnly": True},
                                      "base_url": {"title": "Base Url", "type": "string"}},
                       "required": ["api_token"], "secret_fields": ["api_token"],
                       "block_type_slug": "bench-cost-credentials",
                       "block_schema_references": {}},
            "block_type_id": block_type, "capabilities": []})["id"]
        block = prefect.call("POST", "/block_documents/", {
            "name": "bench-cost", "data": {"api_token": "nf-bench-cost",
                                           "base_url": "http://127.0.0.1:9"},
            "block_schema_id": schema, "block_type_id": block_type})["id"]
    except Exception as e:  # noqa: BLE001 - the read is measured only if the block exists
        log(f"no block document ({type(e).__name__}: {e}); GET /block_documents is left out")
    runs = [i for i, _ in prefect.create_runs(deployment, "bench-cost", n)]
    return {"flow": flow, "pool": pool, "pool_id": pool_id, "deployment": deployment,
            "block": block, "runs": runs}


def measure(api, server_pid, postgres_pid, n):
    """The steps on a fresh server; returns {"idle", "kinds": {kind: step figures}, ...}."""
    prefect = Prefect(api)
    log(f"setting up: a flow, a deployment in a northflank pool, {n} scheduled runs")
    setup = setup_server(prefect, n)
    meter = Meter(server_pid, postgres_pid)
    # Whatever the setup set going first, then the idle rates.
    settle(meter, {"server": 0.1, "postgres": 0.1}, min_wait=8, bound=90)
    idle = measure_idle(meter)
    log(f"idle: server {idle['server']} CPU s/s, Postgres {idle['postgres']} CPU s/s")
    client = Client(api)
    kinds = {}
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        for kind, what in KINDS:
            if kind == "read_block" and not setup["block"]:
                continue
            step = run_step(client, pool, meter, idle, kind, requests_for(kind, setup, setup["runs"]))
            step["what"] = what
            kinds[kind] = step
            log(f"{kind}: {step['requests']} requests, server {step['server_ms']} ms, Postgres "
                f"{step['postgres_ms']} ms per request (settled in {step['settle_s']} s"
                f"{'' if step['idle_reached'] else ', NOT idle'}) {step['statuses']}"
                f"{' ' + str(step.get('orchestration')) if step.get('orchestration') else ''}")
    finals = collections.Counter(r["state"]["type"] for r in prefect.read_runs(setup["runs"]))
    # The worker events posted must be in the server's store, or their cost was not all paid.
    stored = prefect.call("POST", "/events/filter", {
        "filter": {"event": {"prefix": ["prefect.worker."]}}, "limit": 1}).get("total")
    log(f"final states {dict(finals)}; worker events stored {stored} of "
        f"{kinds.get('events', {}).get('items')}")
    return {"runs": n, "concurrency": CONCURRENCY, "idle_cpu_s_per_s": idle,
            "min_settle_s": MIN_SETTLE, "kinds": kinds,
            "final_states": dict(finals), "worker_events_stored": stored,
            "block_read_measured": bool(setup["block"])}


# ---- what the costs predict --------------------------------------------------------------

def composition(results):
    """Each worker's Prefect requests per flow run (endpoint, pool folded → per run) and log
    lines per run, from a full bench's Postgres throughput phase in `results` (results.json),
    else the defaults above."""
    out = {}
    for side in ("ours", "theirs"):
        tput = (((results or {}).get("details") or {}).get(f"{side}_postgres") or {}).get(
            "throughput") or {}
        runs, eps = tput.get("runs"), tput.get("prefect_endpoints")
        if runs and eps:
            per = collections.Counter()
            for k, v in eps.items():
                per[POOL.sub("/work_pools/{pool}", k)] += v / runs
            out[side] = {"endpoints": {k: round(v, 4) for k, v in sorted(per.items())},
                         "log_lines": tput.get("log_messages_per_run") or 0,
                         "source": f"results.json ({results.get('date', 'undated')})"}
        else:
            out[side] = DEFAULT_COMPOSITION[side]
    return out


def per_run(costs, comp, key):
    """One worker's predicted per-run cost (ms, `key` = server_ms or postgres_ms): each endpoint
    count × its measured cost, the flow's own two writes, and its events; returns (total,
    parts, endpoints with no measured cost)."""
    c = {k: v[key] for k, v in costs.items()}
    parts, unmeasured = collections.OrderedDict(), {}
    # Logs: a fixed part per request and a part per line, from the 1-line and the batched step.
    lb = costs.get("logs_batched")
    per_line = ((c["logs_batched"] - c["logs_single"]) / (lb["items"] / lb["requests"] - 1)
                if lb and "logs_single" in c and lb["items"] > lb["requests"] else 0.0)
    per_log_request = c.get("logs_single", 0.0) - per_line
    ev = costs.get("events")
    per_event = c["events"] / (ev["items"] / ev["requests"]) if ev else 0.0
    for endpoint, count in comp["endpoints"].items():
        if endpoint == "POST /api/flow_runs/{id}/set_state":
            parts["set_state PENDING + Submitting"] = (
                c["pending"] * min(count, 1) + c["submitting"] * max(count - 1, 0))
        elif endpoint == "PATCH /api/flow_runs/{id}/labels":
            parts["labels"] = c["labels"] * count
        elif endpoint == "PATCH /api/flow_runs/{id}":
            parts["infrastructure_pid"] = c["infra_pid"] * count
        elif endpoint == "POST /api/work_pools/{pool}/get_scheduled_flow_runs":
            parts["poll"] = c["poll"] * count
        elif endpoint == "GET /api/deployments/{id}":
            parts["GET deployment"] = c["read_deployment"] * count
        elif endpoint == "GET /api/flows/{id}":
            parts["GET flow"] = c["read_flow"] * count
        elif endpoint == "GET /api/block_documents/{id}" and "read_block" in c:
            parts["GET block document"] = c["read_block"] * count
        elif endpoint == "POST /api/logs/":
            parts["logs"] = per_log_request * count + per_line * comp["log_lines"]
        elif endpoint == "POST /api/events":
            pass  # counted by events below, both workers alike
        else:
            unmeasured[endpoint] = count
    # Both workers emit submitted-flow-run and executed-flow-run per run: ours by POST /events,
    # theirs over the events WebSocket (not a request); each is one event for the server.
    parts["worker events (2)"] = per_event * OUR_EVENTS
    parts["flow's own RUNNING + COMPLETED"] = c["running"] + c["completed"]
    parts = {k: round(v, 2) for k, v in parts.items()}
    return round(sum(parts.values()), 2), parts, unmeasured


def derive(costs, comp, measured_ratio=None):
    """Predicted per-run server and Postgres CPU of each worker, their ratio, and the floor:
    ours making only the protocol's four writes (plus the flow's own two)."""
    out = {"composition": comp}
    for key in ("server_ms", "postgres_ms"):
        ours, ours_parts, ours_un = per_run(costs, comp["ours"], key)
        theirs, theirs_parts, theirs_un = per_run(costs, comp["theirs"], key)
        floor = round(sum(costs[k][key] for k in PROTOCOL + FLOW), 2)
        out[key] = {"ours_per_run": ours, "theirs_per_run": theirs, "ours_parts": ours_parts,
                    "theirs_parts": theirs_parts, "protocol_floor_per_run": floor,
                    "predicted_ratio": round(ours / theirs, 3) if theirs else None,
                    "floor_ratio": round(floor / theirs, 3) if theirs else None}
        out["unmeasured"] = {"ours": ours_un, "theirs": theirs_un}
    out["measured_ratio"] = measured_ratio
    return out


def result(measured, results):
    """Everything written to server_cost.json: the measurement and what it predicts."""
    costs = measured["kinds"]
    measured_ratio = (results or {}).get("prefect_server_cpu_ratio_postgres")
    return {**measured, "derived": derive(costs, composition(results), measured_ratio)}


def flat_keys(sc):
    """The keys merged into results.json."""
    if not sc or not sc.get("kinds"):
        return {}
    d = sc.get("derived") or {}
    server, pg = d.get("server_ms") or {}, d.get("postgres_ms") or {}
    return {
        "prefect_server_cpu_ms_per_request_postgres": {k: v["server_ms"] for k, v in sc["kinds"].items()},
        "postgres_cpu_ms_per_request": {k: v["postgres_ms"] for k, v in sc["kinds"].items()},
        "prefect_server_cpu_ms_per_run_predicted_ours_postgres": server.get("ours_per_run"),
        "prefect_server_cpu_ms_per_run_predicted_theirs_postgres": server.get("theirs_per_run"),
        "prefect_server_cpu_predicted_ratio_postgres": server.get("predicted_ratio"),
        "prefect_server_cpu_floor_ratio_postgres": server.get("floor_ratio"),
    }


def main():
    """Alone (scripts/bench with BENCH_ONLY_PHASE=server-cost): a fresh server on the cluster
    scripts/bench started, the measurement, then bench/server_cost.json, its keys merged into
    bench/results.json and its section replaced in BENCHMARKS.md, leaving everything else as it
    is. A small run, or one that fails, writes server_cost.json into the run's directory only."""
    import report
    from servers import Servers, postgres_pid
    scale = os.environ.get("BENCH_SCALE", "full")
    n = int(os.environ.get("BENCH_COST_RUNS") or RUNS.get(scale, RUNS["small"]))
    run_dir = os.environ["BENCH_RUN_DIR"]
    started = time.time()
    with Servers("server-cost", "cost", "postgres", run_dir) as servers:
        measured = measure(servers.api, servers.pid, postgres_pid(), n)
    results = report.load_json(report.RESULTS_JSON)
    sc = result(measured, results)
    sc.update(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              scale=scale, command=os.environ.get("BENCH_COMMAND", ""),
              postgres=os.environ.get("BENCH_PG_VERSION", ""), machine=report.machine(),
              duration_s=round(time.time() - started))
    into_repo = scale == "full" and not os.environ.get("BENCH_COST_NO_WRITE")
    report.publish_server_cost(sc, None if into_repo else run_dir)
    d = sc["derived"]["server_ms"]
    log(f"ours {d['ours_per_run']} ms/run, theirs {d['theirs_per_run']} ms/run: predicted ratio "
        f"{d['predicted_ratio']}, protocol floor ratio {d['floor_ratio']}")


if __name__ == "__main__":
    main()
