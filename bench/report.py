"""Turns the phases' details into bench/results.json (flat headline figures, the config, the
machine, and every phase's raw numbers) and BENCHMARKS.md. Standard library only."""

import datetime
import json
import os
import platform
import re
import subprocess

import server_cost as server_cost_mod

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_JSON = os.path.join(ROOT, "bench", "results.json")
MARKDOWN = os.path.join(ROOT, "BENCHMARKS.md")
# The server's CPU by request kind (server_cost.py) keeps its own file: it is often measured
# alone, and a later full bench that does not measure it carries it over from here.
SERVER_COST_JSON = os.path.join(ROOT, "bench", "server_cost.json")
SERVER_COST_HEADING = "## Prefect server CPU by request kind (Postgres)"
POOL = re.compile(r"/work_pools/[^/]+")

METHOD = """\
- **One machine, one run, in segments.** Each worker meets a fresh Prefect 3.9.1 server of its
  own for each database kind (127.0.0.1, temporary `PREFECT_HOME`, late-run marking after 1 h
  so its rewrites do not load the database): on SQLite (its file in that `PREFECT_HOME`) and on
  PostgreSQL (one temporary cluster started by `scripts/bench` on 127.0.0.1 as the `postgres`
  user, default settings, an empty database per worker, stopped and removed when the bench
  ends). The segments run one after another (ours, theirs on SQLite, then ours, theirs on
  Postgres), so only one worker process and one Prefect server are alive at a time and the
  emulator's counters read before and after a phase belong to that worker. One `nf-emulator`
  (scripted mode, `--report-to-prefect`, rate limit raised out of the way) serves the whole
  run; each server has a counting reverse proxy (`bench/proxy.py`) in front of it for the
  worker. Each worker has its own pool, Northflank project and token. On each server the
  queued batch (throughput) runs first, then the other phases in the order below.
- **Ours** is `prefect-nf local` (dispatch loop and webhook server in one process, the same
  library code as the Lambdas), built with `--profile {profile}`, default settings except
  `PFNF_POLL_INTERVAL` (and `BENCH_OURS_ENV`, if the settings below name any); its webhook is
  registered with the emulator by `prefect-nf webhook register`. **Theirs** is
  `prefect worker start --type northflank` from prefect-northflank 1.0.1 (with prefect 3.9.1,
  `.venv-bench`), default settings (`PREFECT_WORKER_QUERY_SECONDS` = the same poll interval),
  its credentials block pointing at the emulator.
- **Flows** are not executed: the emulator's engine emulation proposes RUNNING, then COMPLETED
  after the scripted duration (`NF_EMULATOR_SCRIPT=succeed:<secs>` in the job's `env`), straight
  to the Prefect server (the `env` also sets the container's `PREFECT_API_URL` to the server,
  not to the proxy), exactly as a container would.
- **SQLite under load** answers 503 ("database is locked") to concurrent writers; how each
  worker copes is part of what is measured.
- **Requests per flow run**: N runs created at once; the phase ends when every flow run is
  terminal in Prefect and every Northflank run has concluded and its job has been deleted. All
  Northflank API requests (emulator counters: for ours the webhook's GET and DELETE included)
  and all Prefect API requests through the worker's proxy during the phase, divided by N. Idle
  traffic in that window (polls, heartbeats, reconciliation) is included. The headline figure
  is the worse of the short and long flows.
- **Log messages per flow run**: the entries of every `POST /api/logs/` body the server
  accepted (Prefect Cloud counts each entry in its logs bucket), through the worker's proxy,
  divided by N; the flows' own logs are not in it (the engine emulation writes none).
- **Throughput**: N runs queued while the pool's queue is paused, then released; the time from
  the release until every run has a successful `POST …/runs` (the emulator's request log, ms)
  or has been given up by the worker (its terminal state's timestamp). The ratio compares
  started runs per second up to the last start, which is theirs time / ours time whenever both
  workers start every run.
- **CPU per flow run** (throughput phase): user + system CPU time from `/proc` of the Prefect
  server's process tree, of Postgres' (the postmaster and its backends, counted apart) and of
  the worker's, read at the release and again once every run has finished and its job has been
  deleted, divided by N. The window holds everything a run costs the server: the worker's
  requests, the flows' own two state changes (the same for both workers), the clean-up, and the
  server's background services (the load table shows their rate on the fresh server before any
  worker started). The bench's own requests in that window are a few counts at the end. The
  whole machine's CPU time (`/proc/stat`) is read beside them: on a shared machine, what else
  runs slows the server and inflates every latency, though not its CPU seconds per run.
- **Dispatch latency**: "run now" flow runs (scheduled time = creation) created one by one at
  random 0.5–1.5 s gaps (the same gaps for both workers), so they land at every point of the
  poll cycle; latency = the Northflank run's start (`POST …/runs` answered) − the run's
  scheduled time.
- **Peak RSS**: a fresh worker process; the summed VmRSS of its process tree sampled every
  0.2 s from the release of N queued runs until they have all finished, and the kernel's VmHWM
  of each process; the larger is reported.
- **Start → first request**: the worker process's spawn to the first request its proxy sees.
- **Instant dispatch**: ours with a long poll interval and `prefect-nf instant-dispatch enable`
  (a Prefect automation calling the webhook server when a run in the pool becomes Scheduled);
  measured like the dispatch latency.
"""


def machine():
    def read(path):
        try:
            with open(path) as f:
                return f.read()
        except OSError:
            return ""
    cpu = next((l.split(":", 1)[1].strip() for l in read("/proc/cpuinfo").splitlines()
                if l.startswith("model name")), platform.processor() or None)
    mem = next((int(l.split()[1]) for l in read("/proc/meminfo").splitlines()
                if l.startswith("MemTotal:")), None)
    distro = next((l.split("=", 1)[1].strip('"') for l in read("/etc/os-release").splitlines()
                   if l.startswith("PRETTY_NAME=")), platform.system())
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(mem / 1024 / 1024, 1) if mem else None,
        "os": f"{distro}, Linux {platform.release()}",
    }


def git_version():
    def git(*args):
        done = subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True)
        return done.stdout.strip()
    commit = git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "src", "Cargo.toml"))
    return f"{commit}{' + uncommitted changes in src/' if dirty else ''}"


def get(d, *path):
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def worst(*values):
    values = [v for v in values if v is not None]
    return max(values) if values else None


def ratio(a, b, digits=2):
    return round(a / b, digits) if a is not None and b else None


DB_SUFFIX = {"sqlite": "", "postgres": "_postgres"}
DB_NAME = {"sqlite": "SQLite", "postgres": "Postgres"}


def segment(side, db):
    """The details' key for one worker on one database kind: `ours`, `theirs` (SQLite, as
    before Postgres joined), `ours_postgres`, `theirs_postgres`."""
    return side + DB_SUFFIX[db]


def side_figures(d, side, sfx):
    """The flat figures of one segment's details `d`; every key ends in `_<side><sfx>`."""
    short, long_, tput = get(d, "requests_short"), get(d, "requests_long"), get(d, "throughput")
    k = f"_{side}{sfx}"
    return {
        f"nf_requests_per_run_5s{k}": get(short, "nf_requests_per_run"),
        f"nf_requests_per_run_60s{k}": get(long_, "nf_requests_per_run"),
        f"nf_requests_per_run{k}": worst(get(short, "nf_requests_per_run"),
                                         get(long_, "nf_requests_per_run")),
        f"prefect_requests_per_run_5s{k}": get(short, "prefect_requests_per_run"),
        f"prefect_requests_per_run_60s{k}": get(long_, "prefect_requests_per_run"),
        f"prefect_requests_per_run{k}": worst(get(short, "prefect_requests_per_run"),
                                              get(long_, "prefect_requests_per_run")),
        f"prefect_requests_per_run_throughput{k}": get(tput, "prefect_requests_per_run"),
        # Prefect Cloud bills each entry of a `POST /logs/` body as one log message.
        f"prefect_log_messages_per_run{k}": worst(get(short, "log_messages_per_run"),
                                                  get(long_, "log_messages_per_run")),
        f"prefect_log_messages_per_run_throughput{k}": get(tput, "log_messages_per_run"),
        f"throughput_s{k}": get(tput, "all_started_s"),
        f"throughput_started_per_s{k}": get(tput, "started_per_s"),
        f"throughput_given_up{k}": get(tput, "given_up"),
        f"prefect_server_cpu_s_per_run{k}": get(tput, "server_cpu_s_per_run"),
        f"worker_cpu_s_per_run{k}": get(tput, "worker_cpu_s_per_run"),
        f"p50_latency_s{k}": get(d, "latency", "p50_s"),
        f"p95_latency_s{k}": get(d, "latency", "p95_s"),
        f"peak_rss_mb{k}": worst(get(d, "rss", "peak_rss_mb"), get(d, "rss", "vmhwm_mb")),
        f"first_request_ms{k}": get(d, "first_request_ms"),
    }


def headline(cfg, details):
    """Flat figures. Without a suffix: the SQLite-backed server (the keys as before Postgres
    joined); `_postgres`: the same figures on Postgres."""
    out = {}
    for db, sfx in DB_SUFFIX.items():
        for side in ("ours", "theirs"):
            out.update(side_figures(details.get(segment(side, db), {}), side, sfx))
        # Started runs per second, ours / theirs: theirs_time / ours_time whenever both
        # workers start every queued run, and still like for like when a worker gives some up.
        out[f"throughput_ratio{sfx}"] = ratio(out[f"throughput_started_per_s_ours{sfx}"],
                                              out[f"throughput_started_per_s_theirs{sfx}"])
        out[f"throughput_time_ratio{sfx}"] = ratio(out[f"throughput_s_theirs{sfx}"],
                                                   out[f"throughput_s_ours{sfx}"])
        out[f"prefect_server_cpu_ratio{sfx}"] = ratio(
            out[f"prefect_server_cpu_s_per_run_ours{sfx}"],
            out[f"prefect_server_cpu_s_per_run_theirs{sfx}"])
        instant = get(details, segment("ours", db), "instant") or {}
        out[f"instant_p50_s_ours{sfx}"] = instant.get("p50_s")
        out[f"instant_p95_s_ours{sfx}"] = instant.get("p95_s")
    for side in ("ours", "theirs"):
        # Postgres' own processes, apart from the Prefect server's.
        out[f"postgres_cpu_s_per_run_{side}"] = get(details, segment(side, "postgres"),
                                                    "throughput", "postgres_cpu_s_per_run")
    sfx = DB_SUFFIX[primary_db(details)]
    if out[f"instant_p95_s_ours{sfx}"] is None:
        instant = get(details, segment("ours", primary_db(details)), "instant") or {}
        out["instant_p95_reason"] = instant.get("error") or "not measured"
    return out


def primary_db(details):
    """The database every phase ran on: SQLite, unless only Postgres was benchmarked."""
    sqlite = any(segment(s, "sqlite") in details for s in ("ours", "theirs"))
    return "sqlite" if sqlite or not details else "postgres"


def targets(cfg, h, db):
    """The targets, each with its verdict. Those that are not about a database kind are read
    on `db`, the one every phase ran on."""
    def verdict(value, limit, higher_is_better=False, unit=""):
        if value is None:
            return "not measured", None
        ok = value >= limit if higher_is_better else value <= limit
        if ok:
            return "met", True
        return f"missed by {abs(value - limit):.2f}{unit}", False
    sfx, name = DB_SUFFIX[db], DB_NAME[db]
    nf5, nf60 = h[f"nf_requests_per_run_5s_ours{sfx}"], h[f"nf_requests_per_run_60s_ours{sfx}"]
    spread = abs(nf60 - nf5) if nf5 is not None and nf60 is not None else None
    limit = cfg["poll_interval"] + 1
    given_up = [h[f"throughput_given_up_ours{s}"] for s in DB_SUFFIX.values()
                if h[f"throughput_given_up_ours{s}"] is not None]
    given_up = sum(given_up) if given_up else None
    rows = [
        (f"Northflank requests per flow run ≤ 4 (ours, worse of 5 s / 60 s; {name})",
         h[f"nf_requests_per_run_ours{sfx}"], *verdict(h[f"nf_requests_per_run_ours{sfx}"], 4)),
        ("… independent of flow duration (60 s and 5 s figures differ by ≤ 0.5)", spread,
         *verdict(spread, 0.5)),
        ("Throughput ≥ 3× theirs on SQLite (started runs per second, ours / theirs)",
         h["throughput_ratio"], *verdict(h["throughput_ratio"], 3, True, "×")),
        ("Throughput ≥ 2× theirs on Postgres", h["throughput_ratio_postgres"],
         *verdict(h["throughput_ratio_postgres"], 2, True, "×")),
        ("Runs given up by ours in the throughput phases = 0 (SQLite + Postgres)", given_up,
         *verdict(given_up, 0)),
        ("Prefect server CPU per flow run ≤ 0.6× theirs on SQLite (throughput phase)",
         h["prefect_server_cpu_ratio"], *verdict(h["prefect_server_cpu_ratio"], 0.6, unit="×")),
        ("Prefect server CPU per flow run ≤ 0.6× theirs on Postgres",
         h["prefect_server_cpu_ratio_postgres"],
         *verdict(h["prefect_server_cpu_ratio_postgres"], 0.6, unit="×")),
        (f"p95 dispatch latency ≤ poll interval + 1 s = {limit} s (ours, {name})",
         h[f"p95_latency_s_ours{sfx}"], *verdict(h[f"p95_latency_s_ours{sfx}"], limit, unit=" s")),
        (f"Peak RSS ≤ 64 MB at {cfg['rss_ours']} runs (ours, {name})", h[f"peak_rss_mb_ours{sfx}"],
         *verdict(h[f"peak_rss_mb_ours{sfx}"], 64, unit=" MB")),
        (f"Instant-dispatch p95 ≤ 2 s (ours, {name})", h[f"instant_p95_s_ours{sfx}"],
         *verdict(h[f"instant_p95_s_ours{sfx}"], 2, unit=" s")),
    ]
    return [{"target": t, "value": v, "verdict": text, "met": met} for t, v, text, met in rows]


def fmt(v, unit=""):
    if v is None:
        return "—"
    if isinstance(v, float):
        v = f"{v:.2f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:.0f}"
    return f"{v}{unit}"


def per_run_table(phase):
    """Endpoint → requests per flow run, busiest first."""
    n = phase.get("runs") or 1
    rows = []
    for kind, key in (("Northflank", "nf_endpoints"), ("Prefect", "prefect_endpoints")):
        for endpoint, count in sorted((phase.get(key) or {}).items(), key=lambda kv: -kv[1]):
            rows.append(f"| {kind} | `{endpoint}` | {count / n:.2f} |")
    return rows


def pool_folded(endpoints):
    """Endpoint keys with the pool's name folded to {pool}, so both workers' line up."""
    out = {}
    for key, v in (endpoints or {}).items():
        key = POOL.sub("/work_pools/{pool}", key)
        out[key] = out.get(key, 0) + v
    return out


def throughput_endpoints_table(ours, theirs):
    """Both workers' Prefect requests per flow run in the throughput phase, side by side, with
    the server's mean time answering each (the proxy's upstream time), and ours' share of the
    server time its requests took."""
    cols = []
    for phase in (ours, theirs):
        phase = phase or {}
        n = phase.get("runs") or 1
        counts = pool_folded(phase.get("prefect_endpoints"))
        secs = pool_folded(phase.get("prefect_endpoint_seconds"))
        cols.append((n, counts, secs, sum(secs.values()) or 1))
    keys = sorted(set(cols[0][1]) | set(cols[1][1]), key=lambda k: (-cols[0][1].get(k, 0), k))
    rows = ["| Endpoint | Ours per run | Ours mean ms | Ours share of server time | "
            "Theirs per run | Theirs mean ms |", "|---|---|---|---|---|---|"]
    for k in keys:
        cells = []
        for i, (n, counts, secs, total) in enumerate(cols):
            c = counts.get(k, 0)
            cells += [f"{c / n:.2f}", fmt(1000 * secs.get(k, 0) / c if c else None)]
            if i == 0:
                cells.append(f"{100 * secs.get(k, 0) / total:.0f} %" if c else "—")
        rows.append(f"| `{k}` | " + " | ".join(cells) + " |")
    return rows


def figures_table(cfg, details, h, db):
    """One database kind's figures, ours against theirs; rows measured on neither are left
    out (Postgres may have run only the throughput phase)."""
    s, l, sfx = cfg["short"], cfg["long"], DB_SUFFIX[db]
    o, t = details.get(segment("ours", db), {}), details.get(segment("theirs", db), {})
    lines = ["| Figure | Ours | Theirs | Ours / theirs |", "|---|---|---|---|"]

    def row(label, a, b, unit=""):
        if a is not None or b is not None:
            lines.append(f"| {label} | {fmt(a, unit)} | {fmt(b, unit)} | {fmt(ratio(a, b))} |")

    def both(*path):
        return get(o, *path), get(t, *path)

    def key(name):
        return h[f"{name}_ours{sfx}"], h[f"{name}_theirs{sfx}"]

    def share_503(d):
        statuses = get(d, "throughput", "dispatch_prefect_statuses") or {}
        total = sum(statuses.values())
        return round(100 * statuses.get("503", 0) / total, 1) if total else None

    row(f"Northflank requests per flow run, {s} s flows ({cfg['req']} runs)", *key("nf_requests_per_run_5s"))
    row(f"Northflank requests per flow run, {l} s flows ({cfg['req']} runs)", *key("nf_requests_per_run_60s"))
    row(f"Prefect requests per flow run, {s} s flows", *key("prefect_requests_per_run_5s"))
    row(f"Prefect requests per flow run, {l} s flows", *key("prefect_requests_per_run_60s"))
    row(f"… plus WebSocket messages (events) per flow run, {l} s flows",
        *both("requests_long", "prefect_ws_messages_per_run"))
    row(f"Prefect log messages per flow run, {s} s flows", *both("requests_short", "log_messages_per_run"))
    row(f"Prefect log messages per flow run, {l} s flows", *both("requests_long", "log_messages_per_run"))
    row(f"Time until {cfg['tput']} queued runs have all started, or been given up (s)", *key("throughput_s"))
    row("… runs the worker gave up on (Crashed without a Northflank run)", *key("throughput_given_up"))
    row("… started runs per second", *key("throughput_started_per_s"))
    row("… first run started after (s)", *both("throughput", "first_start_s"))
    row("… share of the worker's Prefect requests answered 503 meanwhile (%)", share_503(o), share_503(t))
    row("… Prefect requests per flow run (release → every run finished)",
        *key("prefect_requests_per_run_throughput"))
    row("… Prefect log messages per flow run", *key("prefect_log_messages_per_run_throughput"))
    row("… **Prefect server CPU per flow run** (s, release → every run finished)",
        *key("prefect_server_cpu_s_per_run"))
    row("… Prefect server CPU per flow run until the last start (s)",
        *both("throughput", "dispatch_server_cpu_s_per_run"))
    row("… Postgres CPU per flow run, apart from the server's (s)",
        *both("throughput", "postgres_cpu_s_per_run"))
    row("… the worker's own CPU per flow run (s)", *key("worker_cpu_s_per_run"))
    row(f"Dispatch latency p50, {cfg['lat']} runs (s)", *key("p50_latency_s"))
    row("Dispatch latency p95 (s)", *key("p95_latency_s"))
    row("Dispatch latency max (s)", *both("latency", "max_s"))
    row(f"Peak RSS (MB): ours dispatching {cfg['rss_ours']} runs, theirs running {cfg['rss_theirs']}",
        *key("peak_rss_mb"))
    row("Process start → first Prefect request (ms)", *key("first_request_ms"))
    instant = get(o, "instant") or {}
    ip = instant.get("poll_interval_s", cfg["instant_poll_interval"])
    row(f"Instant dispatch latency p50, poll interval {ip} s (s)", h[f"instant_p50_s_ours{sfx}"], None)
    row("Instant dispatch latency p95 (s)", h[f"instant_p95_s_ours{sfx}"], None)
    calls, failed = instant.get("automation_calls"), instant.get("automation_calls_failed")
    row("… automation webhook calls that failed (Prefect's action events)",
        f"{failed} of {calls}" if calls is not None else failed, None)
    lines += ["", f"Throughput ratio on {DB_NAME[db]} (started runs per second, ours / theirs; "
              f"equal to theirs time / ours time when both start every run): "
              f"**{fmt(h[f'throughput_ratio{sfx}'])}×**. Prefect server CPU per flow run, ours / "
              f"theirs: **{fmt(h[f'prefect_server_cpu_ratio{sfx}'])}×**."]
    if get(o, "rss", "all_started_s") or get(t, "rss", "all_started_s"):
        lines += ["", f"During the memory phase ({cfg['rss_secs']} s flows), ours started "
                  f"{cfg['rss_ours']} queued runs in {fmt(get(o, 'rss', 'all_started_s'))} s and "
                  f"theirs {cfg['rss_theirs']} in {fmt(get(t, 'rss', 'all_started_s'))} s."]
    return lines


def load_table(details):
    """How busy each process was during each throughput phase: CPU seconds per wall second
    (1.0 = one core all the time), the whole machine's beside them (on a shared machine the
    rest slows the server down), and the fresh server's own background before any worker."""
    lines = ["| Worker, database | Release → every run finished (s) | Prefect server | Postgres "
             "| Worker | Whole machine | Prefect server idle, before the worker started "
             "| Whole machine then |", "|---|---|---|---|---|---|---|---|"]
    for db in DB_SUFFIX:
        for side in ("ours", "theirs"):
            d = details.get(segment(side, db))
            tput = get(d, "throughput")
            if not tput or tput.get("wall_s") is None:
                continue
            cells = [tput.get(k) for k in ("wall_s", "server_busy", "postgres_busy",
                                           "worker_busy", "machine_busy")]
            cells += [get(d, "idle", "server_busy"), get(d, "idle", "machine_busy")]
            lines.append(f"| {side}, {DB_NAME[db]} | " + " | ".join(fmt(c) for c in cells) + " |")
    return lines if len(lines) > 2 else []


def markdown(cfg, details, errors, h, rows, info, server_cost=None):
    dbs = [db for db in DB_SUFFIX if any(segment(s, db) in details for s in ("ours", "theirs"))]
    lines = [
        "# Benchmarks: prefect-nf vs prefect-northflank 1.0.1",
        "",
        f"Written by `scripts/bench` (`BENCH_SCALE={cfg['scale']}`) on {info['date']}; the run took "
        f"{cfg.get('bench_duration_s', 0) // 60} min. Raw figures: [`bench/results.json`](bench/results.json).",
        "",
        "## Machine and build",
        "",
        "| CPU | Cores | RAM | OS |",
        "|---|---|---|---|",
        f"| {info['machine']['cpu']} | {info['machine']['cores']} | {info['machine']['ram_gb']} GB | {info['machine']['os']} |",
        "",
        f"- Command: `{info['command']}`",
        f"- Ours: `prefect-nf local`, cargo profile `{info['profile']}`, commit {info['commit']}",
        f"- Theirs: `prefect worker start --type northflank`, prefect-northflank 1.0.1, prefect 3.9.1, {info['theirs_python']}",
        "- Prefect server 3.9.1, a fresh one for each worker and database kind: "
        + "; ".join(server_line(cfg, details, db, info) for db in dbs),
        "- `nf-emulator` from this repository (same profile), one for the whole run",
    ]
    for db in dbs:
        lines += ["", f"## Figures: {DB_NAME[db]}-backed Prefect server", ""]
        lines += figures_table(cfg, details, h, db)
    lines += ["", "## Targets", "", "| Target | Value | Verdict |", "|---|---|---|"]
    lines += [f"| {r['target']} | {fmt(r['value'])} | {r['verdict']} |" for r in rows]
    load = load_table(details)
    if load:
        lines += ["", "## Load during the throughput phase (CPU seconds per second)", ""] + load
    lines += where_tables(cfg, details)
    lines += server_cost_section(server_cost)
    lines += ["## Method", "", METHOD.format(profile=info["profile"]).rstrip(), ""]
    lines += problems(details, errors)
    lines += ["## Settings", "", "```json", json.dumps(cfg, indent=2), "```", ""]
    return "\n".join(lines)


def server_line(cfg, details, db, info):
    """Which phases ran on this database kind, and on what."""
    phases = {get(details, segment(s, db), "server", "phases") for s in ("ours", "theirs")}
    what = "every phase" if "all" in phases else "the throughput phase"
    if db == "sqlite":
        return f"SQLite (its file in a temporary `PREFECT_HOME`) for {what}"
    return (f"{info['postgres']} (one temporary cluster on 127.0.0.1, default settings, an empty "
            f"database per worker) for {what}")


def where_tables(cfg, details):
    """Where the requests go: the long flows' phase on the database every phase ran on, then
    the throughput phase on each database kind."""
    lines = []
    db = primary_db(details)
    long_ = [(name, get(details, segment(side, db), "requests_long"))
             for name, side in (("Ours", "ours"), ("Theirs", "theirs"))]
    if any(p for _, p in long_):
        lines += ["", f"## Where the requests go ({cfg['long']} s flows, per flow run, "
                  f"{DB_NAME[db]})", ""]
        for name, phase in long_:
            if phase:
                lines += [f"{name}:", "", "| API | Endpoint | Per flow run |", "|---|---|---|"]
                lines += per_run_table(phase) + [""]
    for db in DB_SUFFIX:
        ours = get(details, segment("ours", db), "throughput")
        theirs = get(details, segment("theirs", db), "throughput")
        if (ours or {}).get("prefect_endpoints") or (theirs or {}).get("prefect_endpoints"):
            lines += ["", f"## Prefect requests in the throughput phase ({DB_NAME[db]}, per flow "
                      "run, release → every run finished)", ""]
            lines += throughput_endpoints_table(ours, theirs) + [""]
    return lines


def problems(details, errors):
    found = list(errors)
    for seg, d in details.items():
        for phase, r in (d or {}).items():
            if isinstance(r, dict) and r.get("error"):
                found.append(f"{seg} / {phase}: {r['error']}")
            if isinstance(r, dict) and r.get("given_up"):
                found.append(f"{seg} / {phase}: the worker gave up on {r['given_up']} runs "
                             f"without starting them: {'; '.join(r.get('given_up_states', []))}")
            if isinstance(r, dict) and r.get("states") and set(r["states"]) - {"COMPLETED"}:
                found.append(f"{seg} / {phase}: final states {r['states']}")
    return ["## Problems seen in this run", ""] + [f"- {p}" for p in found] + [""] if found else []


def write(cfg, details, errors, out_dir=None, server_cost=None):
    """BENCHMARKS.md and results.json: into the repository for a finished run, into `out_dir`
    for an interrupted one (so a stopped bench never replaces the published figures). The
    server's CPU by request kind is this run's `server_cost` if it measured it, else the last
    one measured (bench/server_cost.json), with its own date."""
    h = headline(cfg, details)
    rows = targets(cfg, h, primary_db(details))
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        # scripts/bench's knobs as it was called (BENCH_SCALE always).
        "command": os.environ.get("BENCH_COMMAND") or f"BENCH_SCALE={cfg['scale']} scripts/bench",
        "profile": os.environ.get("BENCH_PROFILE", "bench-release"),
        "commit": git_version(),
        "theirs_python": os.environ.get("BENCH_THEIRS_PYTHON_VERSION", "Python 3.12"),
        "postgres": os.environ.get("BENCH_PG_VERSION") or "PostgreSQL",
    }
    if server_cost:
        server_cost.setdefault("date", info["date"])
        server_cost.setdefault("command", info["command"])
        server_cost.setdefault("scale", cfg["scale"])
        dump_json(os.path.join(out_dir or os.path.join(ROOT, "bench"), "server_cost.json"),
                  server_cost)
    else:
        server_cost = load_json(SERVER_COST_JSON)
    results = {**h, **server_cost_mod.flat_keys(server_cost), "targets": rows, "config": cfg,
               **info, "errors": errors, "details": details}
    json_path = os.path.join(out_dir or os.path.join(ROOT, "bench"), "results.json")
    md_path = os.path.join(out_dir or ROOT, "BENCHMARKS.md")
    dump_json(json_path, results)
    with open(md_path, "w") as f:
        f.write(markdown(cfg, details, errors, h, rows, info, server_cost))
    print(f"wrote {os.path.relpath(md_path, ROOT)} and {os.path.relpath(json_path, ROOT)}")


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def dump_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def server_cost_section(sc):
    """BENCHMARKS.md's section on the server's CPU by request kind; none without figures."""
    if not sc or not sc.get("kinds"):
        return []
    kinds, d = sc["kinds"], sc.get("derived") or {}
    lines = ["", SERVER_COST_HEADING, "",
             f"Measured by `bench/server_cost.py` (`{sc.get('command') or 'scripts/bench'}`, "
             f"{sc.get('date', 'undated')}): a fresh Prefect 3.9.1 server on a fresh Postgres "
             f"database, {sc['runs']} scheduled flow runs, then one step per request kind across "
             f"all of them ({sc.get('concurrency', 8)} requests in flight); the CPU time of the "
             "server's process tree (Postgres' apart) is read before each step and again once "
             f"both are back at their idle rate for 2 s (at least {fmt(sc.get('min_settle_s', 6))} s "
             "after the last answer, so "
             "the event persister's flush falls in the step that caused it), and the idle rate "
             f"measured before the first step (server {fmt(get(sc, 'idle_cpu_s_per_s', 'server'))}, "
             f"Postgres {fmt(get(sc, 'idle_cpu_s_per_s', 'postgres'))} CPU s/s) is taken out.",
             "", "| Request kind | Requests | Server CPU ms per request | Postgres CPU ms per "
             "request | Answers |", "|---|---|---|---|---|"]
    for kind, k in kinds.items():
        answers = ", ".join(f"{s} × {n}" for s, n in sorted((k.get("statuses") or {}).items()))
        if k.get("orchestration"):
            answers += " (" + ", ".join(f"{s} × {n}" for s, n in k["orchestration"].items()) + ")"
        if not k.get("idle_reached", True):
            answers += "; not idle after the step's bound"
        lines.append(f"| `{kind}`: {k.get('what', '')} | {k['requests']} | {fmt(k['server_ms'])} "
                     f"| {fmt(k['postgres_ms'])} | {answers} |")
    if not sc.get("block_read_measured", True):
        lines += ["", "`GET /block_documents/{id}` was not measured (no block document could be "
                  "made); the Python worker's per-run cost below leaves it out."]
    server, pg = d.get("server_ms") or {}, d.get("postgres_ms") or {}
    if server:
        comp = d.get("composition") or {}
        parts = list(dict.fromkeys([*server["ours_parts"], *server["theirs_parts"]]))
        lines += ["", "Per flow run, predicted from these costs and each worker's Prefect requests "
                  "per run in the Postgres throughput phase (source: "
                  f"{get(comp, 'ours', 'source') or '?'}); the worker events are two per run for "
                  "both (theirs go over the events WebSocket, each costed as one posted event); "
                  "logs cost a part per request and a part per line, from the two log steps:", "",
                  "| Part of a flow run's cost | Ours: server ms | Theirs: server ms "
                  "| Ours: Postgres ms | Theirs: Postgres ms |", "|---|---|---|---|---|"]
        for part in parts:
            cells = [get(server, "ours_parts", part), get(server, "theirs_parts", part),
                     get(pg, "ours_parts", part), get(pg, "theirs_parts", part)]
            lines.append(f"| {part} | " + " | ".join(fmt(c) for c in cells) + " |")
        lines.append(f"| **Total** | **{fmt(server['ours_per_run'])}** | "
                     f"**{fmt(server['theirs_per_run'])}** | {fmt(pg.get('ours_per_run'))} | "
                     f"{fmt(pg.get('theirs_per_run'))} |")
        measured = d.get("measured_ratio")
        lines += ["", f"Predicted Prefect server CPU per flow run, ours / theirs: "
                  f"**{fmt(server['predicted_ratio'])}×**"
                  + (f" (the throughput phase measured {fmt(measured)}×)" if measured else "")
                  + ". If ours made only the protocol's four writes (PENDING, labels, "
                  "Submitting, `infrastructure_pid`) beside the flow's own RUNNING and COMPLETED: "
                  f"{fmt(server['protocol_floor_per_run'])} ms per run, "
                  f"**{fmt(server['floor_ratio'])}×** theirs (Postgres: "
                  f"{fmt(pg.get('floor_ratio'))}×)."]
        unmeasured = {k: v for side in ("ours", "theirs")
                      for k, v in (get(d, "unmeasured", side) or {}).items()}
        if unmeasured:
            lines += ["", "Not measured, and left out (per-run counts): " + ", ".join(
                f"`{k}`" for k in sorted(unmeasured)) + " (each at most "
                f"{max(unmeasured.values()):.3f} per run)."]
    return lines + [""]


def splice_section(md, heading, lines):
    """`md` with the section under `heading` replaced by `lines` (which start with a blank line
    and the heading), or inserted before the Method section when it has none."""
    text = md.split("\n")
    body = lines[1:] if lines and lines[0] == "" else lines
    if heading in text:
        start = text.index(heading)
        end = next((i for i in range(start + 1, len(text)) if text[i].startswith("## ")),
                   len(text))
        return "\n".join(text[:start] + body + text[end:])
    at = text.index("## Method") if "## Method" in text else len(text)
    return "\n".join(text[:at] + body + text[at:])


def publish_server_cost(sc, out_dir=None):
    """A measurement made alone: bench/server_cost.json, its keys merged into results.json and
    its section replaced in BENCHMARKS.md, nothing else touched. With `out_dir` (a small or
    failed run), server_cost.json and the section go there instead."""
    section = server_cost_section(sc)
    if out_dir:
        dump_json(os.path.join(out_dir, "server_cost.json"), sc)
        with open(os.path.join(out_dir, "server-cost.md"), "w") as f:
            f.write("\n".join(section))
        print(f"wrote {out_dir}/server_cost.json and server-cost.md")
        return
    dump_json(SERVER_COST_JSON, sc)
    results = load_json(RESULTS_JSON)
    if results is not None:
        results.update(server_cost_mod.flat_keys(sc))
        dump_json(RESULTS_JSON, results)
    try:
        with open(MARKDOWN) as f:
            md = f.read()
    except OSError:
        md = None
    if md is not None:
        with open(MARKDOWN, "w") as f:
            f.write(splice_section(md, SERVER_COST_HEADING, section))
    print("wrote bench/server_cost.json, its keys in bench/results.json and its section in "
          "BENCHMARKS.md")
