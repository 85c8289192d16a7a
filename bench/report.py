"""Turns the phases' details into bench/results.json (flat headline figures, the config, the
machine, and every phase's raw numbers) and BENCHMARKS.md. Standard library only."""

import datetime
import json
import os
import platform
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

METHOD = """\
- **One machine, one run.** One Prefect 3.9.1 server (SQLite, temporary `PREFECT_HOME`,
  127.0.0.1, late-run marking after 1 h so its rewrites do not load SQLite), one `nf-emulator`
  (scripted mode, `--report-to-prefect`, rate limit raised out of the way), one counting
  reverse proxy (`bench/proxy.py`) with one port per worker. Ours runs first, then theirs; only
  one worker process is alive at a time, so the emulator's counters read before and after a
  phase belong to that worker. Each worker has its own pool, Northflank project and token.
- **Ours** is `prefect-nf local` (dispatch loop and webhook server in one process, the same
  library code as the Lambdas), built with `--profile {profile}`, default settings except
  `PFNF_POLL_INTERVAL`; its webhook is registered with the emulator by
  `prefect-nf webhook register`. **Theirs** is `prefect worker start --type northflank` from
  prefect-northflank 1.0.1 (with prefect 3.9.1, `.venv-bench`), default settings
  (`PREFECT_WORKER_QUERY_SECONDS` = the same poll interval), its credentials block pointing at
  the emulator.
- **Flows** are not executed: the emulator's engine emulation proposes RUNNING, then COMPLETED
  after the scripted duration (`NF_EMULATOR_SCRIPT=succeed:<secs>` in the job's `env`), straight
  to the Prefect server (the `env` also sets the container's `PREFECT_API_URL` to the server,
  not to the proxy), exactly as a container would.
- **Shared server.** Both workers meet the same SQLite-backed Prefect server, which answers
  503 ("database is locked") to concurrent writers under load; how each worker copes is part
  of what is measured. Ours runs first, so theirs meets a database holding ours' runs too.
- **Requests per flow run**: N runs created at once; the phase ends when every flow run is
  terminal in Prefect and every Northflank run has concluded and its job has been deleted. All
  Northflank API requests (emulator counters: for ours the webhook's GET and DELETE included)
  and all Prefect API requests through the worker's proxy during the phase, divided by N. Idle
  traffic in that window (polls, heartbeats, reconciliation) is included. The headline figure
  is the worse of the short and long flows.
- **Throughput**: N runs queued while the pool's queue is paused, then released; the time from
  the release until every run has a successful `POST …/runs` (the emulator's request log, ms)
  or has been given up by the worker (its terminal state's timestamp). The ratio compares
  started runs per second up to the last start, which is theirs time / ours time whenever both
  workers start every run.
- **Dispatch latency**: "run now" flow runs (scheduled time = creation) created one by one at
  random 0.5–1.5 s gaps, so they land at every point of the poll cycle; latency = the
  Northflank run's start (`POST …/runs` answered) − the run's scheduled time.
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


def headline(cfg, details):
    out = {}
    for side in ("ours", "theirs"):
        d = details.get(side, {})
        short, long_ = get(d, "requests_short"), get(d, "requests_long")
        out[f"nf_requests_per_run_5s_{side}"] = get(short, "nf_requests_per_run")
        out[f"nf_requests_per_run_60s_{side}"] = get(long_, "nf_requests_per_run")
        out[f"nf_requests_per_run_{side}"] = worst(get(short, "nf_requests_per_run"),
                                                    get(long_, "nf_requests_per_run"))
        out[f"prefect_requests_per_run_5s_{side}"] = get(short, "prefect_requests_per_run")
        out[f"prefect_requests_per_run_60s_{side}"] = get(long_, "prefect_requests_per_run")
        out[f"prefect_requests_per_run_{side}"] = worst(get(short, "prefect_requests_per_run"),
                                                         get(long_, "prefect_requests_per_run"))
        out[f"throughput_s_{side}"] = get(d, "throughput", "all_started_s")
        out[f"throughput_started_per_s_{side}"] = get(d, "throughput", "started_per_s")
        out[f"throughput_given_up_{side}"] = get(d, "throughput", "given_up")
        out[f"p50_latency_s_{side}"] = get(d, "latency", "p50_s")
        out[f"p95_latency_s_{side}"] = get(d, "latency", "p95_s")
        out[f"peak_rss_mb_{side}"] = worst(get(d, "rss", "peak_rss_mb"), get(d, "rss", "vmhwm_mb"))
        out[f"first_request_ms_{side}"] = get(d, "first_request_ms")
    # Started runs per second, ours / theirs: theirs_time / ours_time whenever both workers
    # start every queued run, and still like for like when a worker gives some up.
    out["throughput_ratio"] = ratio(out["throughput_started_per_s_ours"],
                                    out["throughput_started_per_s_theirs"])
    out["throughput_time_ratio"] = ratio(out["throughput_s_theirs"], out["throughput_s_ours"])
    instant = get(details, "ours", "instant") or {}
    out["instant_p50_s_ours"] = instant.get("p50_s")
    out["instant_p95_s_ours"] = instant.get("p95_s")
    if instant.get("p95_s") is None:
        out["instant_p95_reason"] = instant.get("error") or "not measured"
    return out


def targets(cfg, h):
    def verdict(value, limit, higher_is_better=False, unit=""):
        if value is None:
            return "not measured", None
        ok = value >= limit if higher_is_better else value <= limit
        if ok:
            return "met", True
        return f"missed by {abs(value - limit):.2f}{unit}", False
    nf5, nf60 = h["nf_requests_per_run_5s_ours"], h["nf_requests_per_run_60s_ours"]
    spread = abs(nf60 - nf5) if nf5 is not None and nf60 is not None else None
    limit = cfg["poll_interval"] + 1
    rows = [
        ("Northflank requests per flow run ≤ 4 (ours, worse of 5 s / 60 s)",
         h["nf_requests_per_run_ours"], *verdict(h["nf_requests_per_run_ours"], 4)),
        ("… independent of flow duration (60 s and 5 s figures differ by ≤ 0.5)", spread, *verdict(spread, 0.5)),
        ("Throughput ≥ 5× theirs (started runs per second, ours / theirs)", h["throughput_ratio"],
         *verdict(h["throughput_ratio"], 5, higher_is_better=True, unit="×")),
        (f"p95 dispatch latency ≤ poll interval + 1 s = {limit} s (ours)", h["p95_latency_s_ours"],
         *verdict(h["p95_latency_s_ours"], limit, unit=" s")),
        (f"Peak RSS ≤ 64 MB at {cfg['rss_ours']} runs (ours)", h["peak_rss_mb_ours"],
         *verdict(h["peak_rss_mb_ours"], 64, unit=" MB")),
        ("Instant-dispatch p95 ≤ 2 s (ours)", h["instant_p95_s_ours"],
         *verdict(h["instant_p95_s_ours"], 2, unit=" s")),
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


def markdown(cfg, details, errors, h, rows, info):
    s, l = cfg["short"], cfg["long"]
    o, t = details.get("ours", {}), details.get("theirs", {})
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
        "- Prefect server 3.9.1 (SQLite), `nf-emulator` from this repository (same profile)",
        "",
        "## Figures",
        "",
        "| Figure | Ours | Theirs | Ours / theirs |",
        "|---|---|---|---|",
    ]

    def row(label, a, b, unit=""):
        lines.append(f"| {label} | {fmt(a, unit)} | {fmt(b, unit)} | {fmt(ratio(a, b))} |")

    row(f"Northflank requests per flow run, {s} s flows ({cfg['req']} runs)",
        h["nf_requests_per_run_5s_ours"], h["nf_requests_per_run_5s_theirs"])
    row(f"Northflank requests per flow run, {l} s flows ({cfg['req']} runs)",
        h["nf_requests_per_run_60s_ours"], h["nf_requests_per_run_60s_theirs"])
    row(f"Prefect requests per flow run, {s} s flows",
        h["prefect_requests_per_run_5s_ours"], h["prefect_requests_per_run_5s_theirs"])
    row(f"Prefect requests per flow run, {l} s flows",
        h["prefect_requests_per_run_60s_ours"], h["prefect_requests_per_run_60s_theirs"])
    row(f"… plus WebSocket messages (events) per flow run, {l} s flows",
        get(o, "requests_long", "prefect_ws_messages_per_run"),
        get(t, "requests_long", "prefect_ws_messages_per_run"))
    row(f"Time until {cfg['tput']} queued runs have all started, or been given up (s)",
        h["throughput_s_ours"], h["throughput_s_theirs"])
    row("… runs the worker gave up on (Crashed without a Northflank run)",
        h["throughput_given_up_ours"], h["throughput_given_up_theirs"])
    row("… started runs per second", h["throughput_started_per_s_ours"],
        h["throughput_started_per_s_theirs"])
    row("… first run started after (s)", get(o, "throughput", "first_start_s"),
        get(t, "throughput", "first_start_s"))

    def share_503(d):
        statuses = get(d, "throughput", "prefect_statuses") or {}
        total = sum(statuses.values())
        return round(100 * statuses.get("503", 0) / total, 1) if total else None
    row("… share of the worker's Prefect requests answered 503 meanwhile (%)",
        share_503(o), share_503(t))
    row(f"Dispatch latency p50, {cfg['lat']} runs (s)", h["p50_latency_s_ours"], h["p50_latency_s_theirs"])
    row(f"Dispatch latency p95 (s)", h["p95_latency_s_ours"], h["p95_latency_s_theirs"])
    row(f"Dispatch latency max (s)", get(o, "latency", "max_s"), get(t, "latency", "max_s"))
    row(f"Peak RSS (MB): ours dispatching {cfg['rss_ours']} runs, theirs running {cfg['rss_theirs']}",
        h["peak_rss_mb_ours"], h["peak_rss_mb_theirs"])
    row("Process start → first Prefect request (ms)", h["first_request_ms_ours"], h["first_request_ms_theirs"])
    instant = get(o, "instant") or {}
    ip = instant.get("poll_interval_s", cfg["instant_poll_interval"])
    row(f"Instant dispatch latency p50, poll interval {ip} s (s)", h["instant_p50_s_ours"], None)
    row(f"Instant dispatch latency p95 (s)", h["instant_p95_s_ours"], None)
    calls, failed = instant.get("automation_calls"), instant.get("automation_calls_failed")
    row("… automation webhook calls that failed (Prefect's action events)",
        f"{failed} of {calls}" if calls is not None else failed, None)
    lines += ["", f"Throughput ratio (started runs per second, ours / theirs; equal to theirs "
              f"time / ours time when both start every run): **{fmt(h['throughput_ratio'])}×**."]
    if get(o, "rss", "all_started_s") or get(t, "rss", "all_started_s"):
        lines += ["", f"During the memory phase ({cfg['rss_secs']} s flows), ours started "
                  f"{cfg['rss_ours']} queued runs in {fmt(get(o, 'rss', 'all_started_s'))} s and "
                  f"theirs {cfg['rss_theirs']} in {fmt(get(t, 'rss', 'all_started_s'))} s."]
    if h.get("instant_p95_reason"):
        lines += ["", f"Instant dispatch not measured: {h['instant_p95_reason']}."]
    lines += ["", "## Targets", "", "| Target | Value | Verdict |", "|---|---|---|"]
    lines += [f"| {r['target']} | {fmt(r['value'])} | {r['verdict']} |" for r in rows]
    lines += ["", f"## Where the requests go ({l} s flows, per flow run)", ""]
    for name, d in (("Ours", o), ("Theirs", t)):
        phase = get(d, "requests_long")
        if phase:
            lines += [f"{name}:", "", "| API | Endpoint | Per flow run |", "|---|---|---|"]
            lines += per_run_table(phase) + [""]
    lines += ["## Method", "", METHOD.format(profile=info["profile"]).rstrip(), ""]
    problems = list(errors)
    for side, d in details.items():
        for phase, r in (d or {}).items():
            if isinstance(r, dict) and r.get("error"):
                problems.append(f"{side} / {phase}: {r['error']}")
            if isinstance(r, dict) and r.get("given_up"):
                problems.append(f"{side} / {phase}: the worker gave up on {r['given_up']} runs "
                                f"without starting them: {'; '.join(r.get('given_up_states', []))}")
            if isinstance(r, dict) and r.get("states") and set(r["states"]) - {"COMPLETED"}:
                problems.append(f"{side} / {phase}: final states {r['states']}")
    if problems:
        lines += ["## Problems seen in this run", ""] + [f"- {p}" for p in problems] + [""]
    lines += ["## Settings", "", "```json", json.dumps(cfg, indent=2), "```", ""]
    return "\n".join(lines)


def write(cfg, details, errors, out_dir=None):
    """BENCHMARKS.md and results.json: into the repository for a finished run, into `out_dir`
    for an interrupted one (so a stopped bench never replaces the published figures)."""
    h = headline(cfg, details)
    rows = targets(cfg, h)
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "command": f"BENCH_SCALE={cfg['scale']} scripts/bench",
        "profile": os.environ.get("BENCH_PROFILE", "bench-release"),
        "commit": git_version(),
        "theirs_python": os.environ.get("BENCH_THEIRS_PYTHON_VERSION", "Python 3.12"),
    }
    results = {**h, "targets": rows, "config": cfg, **info, "errors": errors, "details": details}
    json_path = os.path.join(out_dir or os.path.join(ROOT, "bench"), "results.json")
    md_path = os.path.join(out_dir or ROOT, "BENCHMARKS.md")
    with open(json_path, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    with open(md_path, "w") as f:
        f.write(markdown(cfg, details, errors, h, rows, info))
    print(f"wrote {os.path.relpath(md_path, ROOT)} and {os.path.relpath(json_path, ROOT)}")
