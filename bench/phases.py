"""The measurements. Each phase runs with exactly one worker process alive, so the emulator's
global counters, read before and after, belong to that worker; each worker also has its own
pool, Northflank project, token and proxy port. Every wait has a deadline: a phase that runs out
of time records what it saw and the reason instead of hanging."""

import datetime
import re
import time

from api import TERMINAL, diff_counts, nf_total
from procs import CpuMeter, RssSampler

RUN_PATH = re.compile(r"/projects/([^/]+)/jobs/([^/]+)/runs$")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class PhaseTimeout(Exception):
    pass


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def percentile(values, q):
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def wait_for(check, timeout, what, every=1.0):
    """Calls check() until it returns a truthy value; raises PhaseTimeout after `timeout` s.
    check() may return (done, progress text)."""
    deadline = time.time() + timeout
    last_note = time.time()
    while True:
        result = check()
        done, progress = result if isinstance(result, tuple) else (result, "")
        if done:
            return
        if time.time() > deadline:
            raise PhaseTimeout(f"timed out after {timeout:.0f}s waiting for {what} ({progress})")
        if time.time() - last_note > 20:
            log(f"  waiting for {what}: {progress}")
            last_note = time.time()
        time.sleep(every)


def wait_ready(ctx, side, worker, timeout=180):
    """A worker is ready once its first poll for scheduled runs has passed its proxy."""
    def polled():
        if not worker.alive():
            raise PhaseTimeout(f"{side.name} worker exited with {worker.proc.returncode}; see its log")
        eps = side.proxy.stats()["endpoints"]
        return any("get_scheduled_flow_runs" in k for k in eps), "no poll yet"
    wait_for(polled, timeout, f"{side.name} worker's first poll", every=0.25)


def first_request_ms(side, worker):
    first = side.proxy.stats()["first_request_at"]
    return None if first is None else round((first - worker.spawned_at) * 1000)


def flow_run_of(job, wanted, by_short):
    """The flow run a Northflank job belongs to: ours are `pf-<flow run id>`, the Python
    worker's `pf-<flow run name>-<first 8 hex of the id>`."""
    if job[3:] in wanted:
        return job[3:]
    return by_short.get(job.rsplit("-", 1)[-1])


def started_set(ctx, ids):
    """Which of these flow runs have a started Northflank run (the emulator counts starts per
    job, so runs left over from elsewhere cannot be mistaken for them)."""
    wanted, by_short = set(ids), {i.split("-")[0]: i for i in ids}
    jobs = ctx.emulator.counters()["runs_started_by_job"]
    return {flow_run_of(j, wanted, by_short) for j in jobs} - {None}


def wait_started(ctx, side, ids, timeout):
    """Until every run has started on Northflank, or has been given up by the worker without
    one (the Python worker crashes a run whose submission hit a Prefect error): both are
    handled. Returns how many were given up."""
    n = len(ids)
    given_up = [0]
    progress = {"count": -1, "at": time.time()}

    def check():
        done = started_set(ctx, ids)
        if len(done) != progress["count"]:
            progress.update(count=len(done), at=time.time())
        rest = [i for i in ids if i not in done]
        # Prefect is asked only once starts have stalled for a while: polling it with a
        # thousand ids every few seconds would load the server being measured. (The time
        # figures use the states' own timestamps, so a late look costs no accuracy.)
        if rest and time.time() - progress["at"] > 10:
            given_up[0] = ctx.prefect.count_runs(rest, TERMINAL)
        return len(done) + given_up[0] >= n, f"{len(done)}/{n} started, {given_up[0]} given up"
    wait_for(check, timeout, f"{n} {side.name} runs to start", every=2.0)
    return given_up[0]


def drain(ctx, side, timeout=180):
    """Before a phase: no run of this worker's pool may still be queued or running, nor any
    job left in its project, or it would be counted in this phase. Queued leftovers (from a
    phase that failed half-way) are deleted; running ones are waited for."""
    leftovers = ctx.prefect.delete_queued(side.pool)
    if leftovers:
        log(f"{side.name}: deleted {leftovers} queued runs left over")

    def check():
        active = ctx.prefect.count_pool_runs(side.pool, ["SCHEDULED", "PENDING", "RUNNING",
                                                         "CANCELLING"])
        jobs = len(ctx.emulator.jobs(side.project))
        return active == 0 and jobs == 0, f"{active} runs still active, {jobs} jobs left"
    try:
        wait_for(check, timeout, f"{side.name}'s earlier runs to finish", every=3.0)
    except PhaseTimeout as e:
        log(f"{side.name}: {e}; measuring anyway")
        return str(e)
    return None


def wait_finished(ctx, side, ids, c0, timeout):
    """Finished = every flow run terminal in Prefect, and as many Northflank runs concluded and
    jobs deleted as runs were created (the cleanup is part of what is counted)."""
    n = len(ids)

    def check():
        c = ctx.emulator.counters()
        # Only runs that started on Northflank have a run to conclude and a job to delete.
        k = len(started_set(ctx, ids))
        concluded = sum(c[key] - c0[key] for key in
                        ("runs_succeeded", "runs_failed", "runs_aborted", "runs_terminated"))
        deleted = c["jobs_deleted"] - c0["jobs_deleted"]
        progress = f"{concluded}/{k} Northflank runs concluded, {deleted}/{k} jobs deleted"
        # Prefect is asked only once Northflank looks done: the bench must not load the server.
        if concluded < k or deleted < k:
            return False, progress
        terminal = ctx.prefect.count_runs(ids, TERMINAL)
        return terminal >= n, f"{progress}, {terminal}/{n} flow runs terminal"
    wait_for(check, timeout, f"{n} {side.name} runs to finish", every=2.0)


def start_times(ctx, side, ids):
    """Flow run id → Unix time of its first successful `POST …/runs` (the emulator stamps each
    request after answering it, in ms)."""
    by_short = {i.split("-")[0]: i for i in ids}
    wanted = set(ids)
    out = {}
    for r in ctx.emulator.requests():
        m = RUN_PATH.search(r["path"])
        if r["method"] != "POST" or r["status"] != 200 or not m or m.group(1) != side.project:
            continue
        run_id = flow_run_of(m.group(2), wanted, by_short)
        if run_id:
            at = parse_time(r["at"])
            out[run_id] = min(at, out.get(run_id, at))
    return out


def proxy_figures(p0, p1, n):
    """What the worker asked of Prefect between two proxy readings, for `n` flow runs: requests
    by endpoint and status, the server's time answering each endpoint, and log messages."""
    return {
        "prefect_endpoints": diff_counts(p1["endpoints"], p0["endpoints"]),
        "prefect_endpoint_seconds": {
            k: round(v, 3) for k, v in
            diff_counts(p1["endpoint_seconds"], p0["endpoint_seconds"]).items()},
        "prefect_statuses": diff_counts(p1["statuses"], p0["statuses"]),
        "log_messages": p1["log_entries"] - p0["log_entries"],
        "log_messages_per_run": round((p1["log_entries"] - p0["log_entries"]) / n, 2),
        "log_levels": diff_counts(p1["log_levels"], p0["log_levels"]),
    }


def cpu_figures(reading, n, prefix=""):
    """CPU seconds per flow run of each measured process tree, and how busy each was (CPU
    seconds per wall second: 1.0 is one core all the time)."""
    out = {f"{prefix}wall_s": reading["wall_s"]}
    for key, value in reading.items():
        if key.endswith("_cpu_s"):
            out[f"{prefix}{key}"] = value
            out[f"{prefix}{key}_per_run"] = round(value / n, 4)
            out[f"{prefix}{key[:-len('_cpu_s')]}_busy"] = round(value / max(reading["wall_s"], 0.001), 3)
    return out


def idle_phase(ctx, secs=10):
    """The fresh server's own CPU use with no worker running (its services' loops), for
    reading the per-run figures: part of them is this background."""
    meter = CpuMeter(machine=True, server=ctx.server_pid, postgres=ctx.postgres_pid)
    time.sleep(secs)
    reading = meter.read()
    return {k: v for k, v in cpu_figures(reading, 1).items() if not k.endswith("_per_run")}


def outcome_counts(ctx, ids):
    return {k: v for k, v in ctx.prefect.state_counts(ids).items() if v}


def requests_phase(ctx, side, secs, n):
    """Northflank and Prefect requests per flow run for flows lasting `secs`."""
    log(f"{side.name}: {n} flow runs of {secs}s, counting requests")
    dep = side.deployment(f"succeed:{secs}")
    leftovers = drain(ctx, side)
    c0, p0 = ctx.emulator.counters(), side.proxy.stats()
    t0 = time.time()
    ids = [i for i, _ in ctx.prefect.create_runs(dep, f"req-{secs}", n)]
    result = {"runs": n, "flow_secs": secs}
    if leftovers:
        result["leftovers"] = leftovers
    try:
        wait_finished(ctx, side, ids, c0, timeout=secs + 240 + 3 * n)
        # Late stragglers (a final log batch, a heartbeat in flight) land in the window too.
        time.sleep(2)
    except PhaseTimeout as e:
        result["error"] = str(e)
    c1, p1 = ctx.emulator.counters(), side.proxy.stats()
    result.update({
        "duration_s": round(time.time() - t0, 1),
        "nf_requests": nf_total(c1) - nf_total(c0),
        "nf_requests_per_run": round((nf_total(c1) - nf_total(c0)) / n, 2),
        "prefect_requests": p1["requests"] - p0["requests"],
        "prefect_requests_per_run": round((p1["requests"] - p0["requests"]) / n, 2),
        "prefect_websockets": p1["websockets"] - p0["websockets"],
        # Prefect's Python client sends events over one long-lived WebSocket, not as requests.
        "prefect_ws_messages_per_run": round(
            (p1["websocket_messages"] - p0["websocket_messages"]) / n, 2),
        "nf_endpoints": diff_counts(c1["requests"], c0["requests"]),
        **proxy_figures(p0, p1, n),
        "states": outcome_counts(ctx, ids),
    })
    log(f"{side.name}: {secs}s flows: {result['nf_requests_per_run']} Northflank and "
        f"{result['prefect_requests_per_run']} Prefect requests per run")
    return result


def latency_phase(ctx, side, n, label="latency"):
    """"Run now" flow runs created one by one at random gaps (so they land at every point of
    the poll cycle); latency = the Northflank run's start − the run's scheduled time."""
    log(f"{side.name}: {label}: {n} runs created at random 0.5-1.5 s gaps")
    dep = side.deployment("succeed:5")
    drain(ctx, side)
    c0 = ctx.emulator.counters()
    runs = []
    for _ in range(n):
        runs.append(ctx.prefect.create_run(dep, label))
        time.sleep(ctx.rng.uniform(0.5, 1.5))
    ids = [i for i, _ in runs]
    result = {"runs": n}
    try:
        result["given_up"] = wait_started(ctx, side, ids, side.poll_interval * 3 + 120 + n)
    except PhaseTimeout as e:
        result["error"] = str(e)
    starts = start_times(ctx, side, ids)
    lat = [starts[i] - parse_time(s) for i, s in runs if i in starts]
    result.update({
        "started": len(lat),
        "p50_s": round(percentile(lat, 0.5), 2) if lat else None,
        "p95_s": round(percentile(lat, 0.95), 2) if lat else None,
        "max_s": round(max(lat), 2) if lat else None,
        "min_s": round(min(lat), 2) if lat else None,
        "latencies_s": [round(x, 2) for x in lat],
    })
    finish_quietly(ctx, side, ids, c0, 5, result)
    log(f"{side.name}: {label}: p50 {result['p50_s']} s, p95 {result['p95_s']} s "
        f"({len(lat)}/{n} started)")
    return result


def queued_phase(ctx, side, worker, n, secs, sample_rss=False, label="throughput"):
    """`n` runs queued while the pool's queue is paused, then released at once: the time until
    every one has a started Northflank run (or was given up by the worker). Meanwhile the CPU
    time of the Prefect server, Postgres (if any) and the worker is read at the release, once
    every run has started and once every run has finished; with `sample_rss`, the worker's
    memory is sampled."""
    log(f"{side.name}: {label}: queueing {n} runs of {secs}s (queue paused)")
    dep = side.deployment(f"succeed:{secs}")
    drain(ctx, side)
    ctx.prefect.set_queue_paused(side.pool, True)
    try:
        created = ctx.prefect.create_runs(dep, label, n)
    except Exception:
        # None of a half-made batch may run later, inside another phase.
        ctx.prefect.delete_queued(side.pool)
        ctx.prefect.set_queue_paused(side.pool, False)
        raise
    # Give any poll that was already in flight time to come back empty.
    time.sleep(1)
    c0 = ctx.emulator.counters()
    sampler = RssSampler(worker.proc.pid) if sample_rss else None
    if sampler:
        sampler.__enter__()
    p0 = side.proxy.stats()
    # The whole machine too: on a shared machine, what else ran slows the server down.
    cpu = CpuMeter(machine=True, server=ctx.server_pid, postgres=ctx.postgres_pid,
                   worker=worker.proc.pid)
    released = time.time()
    ctx.prefect.set_queue_paused(side.pool, False)
    ids = [i for i, _ in created]
    result = {"runs": n, "flow_secs": secs}
    try:
        try:
            result["given_up"] = wait_started(ctx, side, ids, 300 + 2 * n)
        except PhaseTimeout as e:
            result["error"] = str(e)
        result.update(cpu_figures(cpu.read(), n, prefix="dispatch_"))
        p1 = side.proxy.stats()
        # How loaded the Prefect server was while the worker dispatched: its 503s are SQLite
        # refusing concurrent writers.
        result["dispatch_prefect_statuses"] = diff_counts(p1["statuses"], p0["statuses"])
        result.update(start_figures(ctx, side, ids, released))
        finish_quietly(ctx, side, ids, c0, secs, result)
        # The whole phase, the flows' end and the clean-up included: what one run costs.
        result.update(cpu_figures(cpu.read(), n))
        p2, c2 = side.proxy.stats(), ctx.emulator.counters()
        result.update(proxy_figures(p0, p2, n))
        result["prefect_requests_per_run"] = round((p2["requests"] - p0["requests"]) / n, 2)
        result["nf_requests_per_run"] = round((nf_total(c2) - nf_total(c0)) / n, 2)
    finally:
        if sampler:
            sampler.__exit__(None, None, None)
            result.update(sampler.result_mb())
    log(f"{side.name}: {label}: all {result['started']}/{n} started after "
        f"{result.get('all_started_s')} s; server CPU {result.get('server_cpu_s_per_run')} s/run"
        + (f", peak RSS {result['peak_rss_mb']} MB" if sampler else ""))
    return result


def start_figures(ctx, side, ids, released):
    """When the queued runs started on Northflank, counted from their release; runs the worker
    gave up on count as handled at their terminal state's time."""
    n = len(ids)
    starts = start_times(ctx, side, ids)
    out = {"started": len(starts)}
    if starts:
        # Started runs per second up to the last start: when a worker gives some runs up,
        # "all handled" is no longer a like-for-like time, but this rate still is.
        out["last_start_s"] = round(max(starts.values()) - released, 2)
        out["started_per_s"] = round(len(starts) / max(out["last_start_s"], 0.001), 3)
        out["first_start_s"] = round(min(starts.values()) - released, 2)
    handled = list(starts.values())
    if len(starts) < n:
        # A run the worker gave up on is handled when its terminal state was set.
        gave_up = [r for r in ctx.prefect.read_runs([i for i in ids if i not in starts])
                   if r["state"]["type"] in TERMINAL]
        handled += [parse_time(r["state"]["timestamp"]) for r in gave_up]
        if gave_up:
            out["given_up_states"] = sorted({UUID.sub("{id}", r["state"]["message"] or "")[:200]
                                             for r in gave_up})
    out["all_started_s"] = round(max(handled) - released, 2) if len(handled) >= n else None
    return out


def finish_quietly(ctx, side, ids, c0, secs, result):
    """Lets a phase's runs finish and be cleaned up, so the next phase starts from zero."""
    try:
        wait_finished(ctx, side, ids, c0, timeout=secs + 240 + 2 * len(ids))
    except PhaseTimeout as e:
        result.setdefault("error", str(e))
    result["states"] = outcome_counts(ctx, ids)
