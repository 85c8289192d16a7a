"""Small HTTP clients the bench driver uses: the Prefect REST API (direct, never through the
proxies, so the bench's own requests are not attributed to a worker), the emulator's control API
and the proxies' stats. Standard library only."""

import json
import random
import time
import urllib.error
import urllib.request

TERMINAL = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]


class HttpError(Exception):
    def __init__(self, method, url, status, body):
        super().__init__(f"{method} {url}: HTTP {status}: {body[:300]}")
        self.status = status


def http_json(method, url, body=None, timeout=30, retries=12, budget=120):
    """One JSON request. A SQLite-backed Prefect server answers 503 ("database is locked")
    under load: retry those, as Prefect's own client does, with a jittered backoff. All
    attempts together stop after `budget` seconds, so a server that hangs fails the phase
    instead of stalling the bench."""
    data = None if body is None else json.dumps(body).encode()
    delay = 0.25
    give_up_at = time.time() + budget
    for attempt in range(retries + 1):
        if attempt and time.time() + delay > give_up_at:
            raise TimeoutError(f"{method} {url}: no answer within {budget}s")
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
                return json.loads(raw) if raw.strip() else None
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            if e.code not in (429, 502, 503) or attempt == retries:
                raise HttpError(method, url, e.code, text) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if attempt == retries:
                raise
        time.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, 5)


class Prefect:
    def __init__(self, api):
        self.api = api.rstrip("/")

    def call(self, method, path, body=None, timeout=30):
        return http_json(method, self.api + path, body, timeout)

    def ensure_flow(self, name):
        return self.call("POST", "/flows/", {"name": name})["id"]

    def ensure_deployment(self, flow_id, name, pool, job_variables):
        """Creates or updates (Prefect upserts by flow and name) a deployment with no schedule;
        the bench creates its runs itself."""
        body = {
            "name": name,
            "flow_id": flow_id,
            "work_pool_name": pool,
            "job_variables": job_variables,
            "enforce_parameter_schema": False,
            "paused": False,
        }
        return self.call("POST", "/deployments/", body)["id"]

    def create_run(self, deployment_id, tag):
        """A "run now" flow run: Scheduled, scheduled_time = the server's now."""
        run = self.call("POST", f"/deployments/{deployment_id}/create_flow_run", {"tags": [tag]})
        scheduled = (run.get("state") or {}).get("state_details", {}).get("scheduled_time")
        return run["id"], scheduled or run.get("expected_start_time")

    def create_runs(self, deployment_id, tag, count):
        """Many runs, one request at a time: concurrent creations only make the server's
        SQLite refuse more of them."""
        return [self.create_run(deployment_id, tag) for _ in range(count)]

    def count_runs(self, ids, states=None):
        total = 0
        # Large `any_` lists are fine for the server, but keep each request modest.
        for i in range(0, len(ids), 500):
            flt = {"id": {"any_": ids[i:i + 500]}}
            if states:
                flt["state"] = {"type": {"any_": states}}
            total += self.call("POST", "/flow_runs/count", {"flow_runs": flt})
        return total

    def read_runs(self, ids):
        out = []
        for i in range(0, len(ids), 200):
            body = {"flow_runs": {"id": {"any_": ids[i:i + 200]}}, "limit": 200}
            out += self.call("POST", "/flow_runs/filter", body)
        return out

    def pool_runs(self, pool, states, limit=200):
        body = {"flow_runs": {"state": {"type": {"any_": states}}},
                "work_pools": {"name": {"any_": [pool]}}, "limit": limit}
        return self.call("POST", "/flow_runs/filter", body)

    def count_pool_runs(self, pool, states):
        body = {"flow_runs": {"state": {"type": {"any_": states}}},
                "work_pools": {"name": {"any_": [pool]}}}
        return self.call("POST", "/flow_runs/count", body)

    def delete_queued(self, pool):
        """Deletes the pool's runs still waiting in Scheduled; returns how many."""
        deleted = 0
        for _ in range(100):
            runs = self.pool_runs(pool, ["SCHEDULED"])
            if not runs:
                break
            for run in runs:
                self.delete_run(run["id"])
            deleted += len(runs)
        return deleted

    def delete_run(self, run_id):
        try:
            self.call("DELETE", f"/flow_runs/{run_id}")
        except HttpError as e:
            if e.status != 404:
                raise

    def state_counts(self, ids):
        return {s: self.count_runs(ids, [s]) for s in TERMINAL + ["PENDING", "RUNNING", "SCHEDULED"]}

    def set_queue_paused(self, pool, paused, queue="default"):
        """Holds a pool's runs back. The pool's own `is_paused` is not enough: the server's
        scheduled-runs query (3.9.1) only looks at the queues' pause flags."""
        self.call("PATCH", f"/work_pools/{pool}/queues/{queue}", {"is_paused": paused})

    def create_pool(self, name, pool_type, template):
        try:
            self.call("POST", "/work_pools/", {"name": name, "type": pool_type,
                                               "base_job_template": template})
        except HttpError as e:
            if e.status != 409:
                raise

    def delete_automations(self):
        """Removes every automation (the temporary server holds only the bench's own)."""
        for automation in self.call("POST", "/automations/filter", {}) or []:
            self.call("DELETE", f"/automations/{automation['id']}")


class Emulator:
    def __init__(self, base):
        self.base = base.rstrip("/")

    def counters(self):
        return http_json("GET", self.base + "/_emulator/counters")

    def jobs(self, project):
        state = http_json("GET", self.base + "/_emulator/state", timeout=120, budget=300)
        return [j["id"] for j in state["jobs"] if j["projectId"] == project]

    def requests(self):
        return http_json("GET", self.base + "/_emulator/requests", timeout=120, budget=300)


class Proxy:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def stats(self):
        return http_json("GET", self.base + "/_proxy/stats")

    def reset(self):
        http_json("POST", self.base + "/_proxy/reset")


def nf_total(counters):
    """All Northflank API requests the emulator answered (the control API is not counted)."""
    return sum(counters["requests"].values())


def diff_counts(after, before):
    keys = set(after) | set(before)
    out = {k: after.get(k, 0) - before.get(k, 0) for k in keys}
    return {k: v for k, v in sorted(out.items()) if v}
