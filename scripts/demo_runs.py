"""Triggers the demo's flow runs, waits for them to settle, and prints what happened.

Used by scripts/demo with the project's .venv. Exits non-zero if a run did not end as expected.
"""

import json
import os
import sys
import time
import urllib.request

API = os.environ["PREFECT_API_URL"]
EMULATOR = os.environ["NF_EMULATOR_URL"]

# name parameter → (job variables for that run, the state it should end in)
RUNS = {
    "Northflank": ({}, "COMPLETED"),
    "Prefect": ({"env": {"GREETING_SOURCE": "flow-run job variables"}}, "COMPLETED"),
    "Rust": ({"settings_active_deadline_seconds": 300}, "COMPLETED"),
    "a failing container": ({"command": "sh -c 'echo simulated container failure >&2; exit 3'"}, "CRASHED"),
}


def call(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    for attempt in range(10):
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                text = resp.read()
                return json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            if e.code != 503 or attempt == 9:
                raise
            time.sleep(0.5 * (attempt + 1))


def main():
    deployment = call("POST", f"{API}/deployments/filter", {"deployments": {"name": {"any_": ["hello"]}}})[0]
    runs = {}
    for name, (job_variables, _) in RUNS.items():
        run = call("POST", f"{API}/deployments/{deployment['id']}/create_flow_run",
                   {"parameters": {"name": name}, "job_variables": job_variables})
        runs[run["id"]] = name
        print(f"scheduled flow run {run['name']} (name={name!r})", flush=True)

    # Settled means a final state and the Northflank job cleaned up (the job is deleted when
    # Northflank reports the run concluded, just after the engine reports the final state).
    deadline = time.time() + 300
    final = {}
    jobs = set()
    while time.time() < deadline:
        for run_id in runs:
            run = call("GET", f"{API}/flow_runs/{run_id}")
            if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                final[run_id] = run
        jobs = {j["id"] for j in call("GET", f"{EMULATOR}/_emulator/state")["jobs"]}
        if len(final) == len(runs) and not jobs:
            break
        time.sleep(1)

    rows = [("flow run", "name parameter", "Northflank job / run", "state", "job deleted")]
    ok = True
    for run_id, name in runs.items():
        run = final.get(run_id) or call("GET", f"{API}/flow_runs/{run_id}")
        pid = run.get("infrastructure_pid") or "::"
        project, job, nf_run = (pid.split(":") + ["", "", ""])[:3]
        state = run["state"]["type"]
        expected = RUNS[name][1]
        ok &= state == expected and job not in jobs
        rows.append((run["name"], name, f"{job} / {nf_run[:8]}", state, "yes" if job and job not in jobs else "no"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    print()
    for i, row in enumerate(rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print()
    if not ok:
        print("some flow runs did not end as expected (see the table)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
