"""Checks of the bench's own measuring code, run by scripts/bench before it spends most of an
hour measuring (python -m unittest bench/selftest.py): the proxy's counts, the CPU readings and
the report's keys. Standard library only; everything on 127.0.0.1."""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request
from http.server import BaseHTTPRequestHandler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import proxy  # noqa: E402
import report  # noqa: E402
import server_cost  # noqa: E402
from phases import cpu_figures, proxy_figures  # noqa: E402
from procs import CpuMeter, cpu_seconds  # noqa: E402


class Upstream(BaseHTTPRequestHandler):
    """Stands in for the Prefect server: log batches are taken (201), except one marked to be
    refused as a busy SQLite server would (503)."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        status = 503 if b"refuse-me" in body else 201
        time.sleep(0.02)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


def serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


class ProxyCounts(unittest.TestCase):
    def setUp(self):
        self.upstream = proxy.Server(("127.0.0.1", 0), Upstream)
        up = serve(self.upstream)
        self.stats = proxy.Stats()
        self.front = proxy.Server(("127.0.0.1", 0), proxy.make_handler(
            urllib.parse.urlsplit(f"http://127.0.0.1:{up}"), self.stats))
        self.port = serve(self.front)

    def tearDown(self):
        for server in (self.front, self.upstream):
            server.shutdown()
            server.server_close()

    def post(self, path, entries):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                         data=json.dumps(entries).encode(), method="POST")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as e:
            return e.code

    def test_log_entries_are_counted_when_the_server_takes_them(self):
        three = [{"level": 20, "message": "a"}, {"level": 20, "message": "b"},
                 {"level": 40, "message": "c"}]
        self.assertEqual(self.post("/api/logs/", three), 201)
        self.assertEqual(self.post("/api/logs/", [{"level": 20, "message": "refuse-me"}]), 503)
        self.assertEqual(self.post("/api/flow_runs/filter", [{"level": 20}]), 201)
        snap = self.stats.snapshot()
        self.assertEqual(snap["log_entries"], 3)
        self.assertEqual(snap["log_levels"], {"INFO": 2, "ERROR": 1})
        self.assertEqual(snap["endpoints"]["POST /api/logs/"], 2)
        self.assertEqual(snap["statuses"], {"201": 2, "503": 1})
        self.assertGreaterEqual(snap["endpoint_seconds"]["POST /api/logs/"], 0.04)

    def test_a_body_that_is_not_a_list_still_counts_once(self):
        self.assertEqual(proxy.log_levels(b'{"level": 20}'), ["?"])
        self.assertEqual(proxy.log_levels(b"not json"), ["?"])
        self.assertEqual(proxy.log_levels(b'[{"level": 30}, 5]'), ["WARNING", "?"])


class CpuReadings(unittest.TestCase):
    def test_a_reaped_child_still_counts(self):
        before = cpu_seconds(os.getpid())
        # A child that burns about 0.3 s of CPU and is reaped before the second reading.
        subprocess.run([sys.executable, "-c",
                        "import time\nt = time.process_time()\n"
                        "while time.process_time() - t < 0.3: pass"], check=True)
        self.assertGreaterEqual(cpu_seconds(os.getpid()) - before, 0.25)

    def test_the_meter_reads_each_tree_and_skips_what_is_not_there(self):
        meter = CpuMeter(machine=True, me=os.getpid(), absent=None)
        t = time.process_time()
        while time.process_time() - t < 0.2:
            pass
        reading = meter.read()
        self.assertGreaterEqual(reading["me_cpu_s"], 0.15)
        self.assertNotIn("absent_cpu_s", reading)
        self.assertGreaterEqual(reading["machine_cpu_s"], reading["me_cpu_s"] - 0.02)
        figures = cpu_figures(reading, 4)
        self.assertAlmostEqual(figures["me_cpu_s_per_run"], reading["me_cpu_s"] / 4, places=3)
        self.assertIn("me_busy", figures)


def throughput(n, server, worker, postgres=None, started_per_s=2.0, given_up=0, logs=0):
    reading = {"server_cpu_s": server, "worker_cpu_s": worker, "machine_cpu_s": 30.0,
               "wall_s": 20.0}
    if postgres is not None:
        reading["postgres_cpu_s"] = postgres
    empty = {"requests": 0, "endpoints": {}, "endpoint_seconds": {}, "statuses": {},
             "log_entries": 0, "log_levels": {}}
    after = {"requests": 3 * n, "statuses": {"201": 3 * n},
             "endpoints": {"POST /api/work_pools/bench-x/get_scheduled_flow_runs": n,
                           "POST /api/logs/": 2 * n},
             "endpoint_seconds": {"POST /api/work_pools/bench-x/get_scheduled_flow_runs": n / 10,
                                  "POST /api/logs/": n / 100},
             "log_entries": logs * n, "log_levels": {"INFO": logs * n}}
    return {"runs": n, "given_up": given_up, "started": n - given_up,
            "started_per_s": started_per_s, "all_started_s": n / started_per_s,
            "dispatch_prefect_statuses": {"201": n}, **cpu_figures(reading, n),
            **proxy_figures(empty, after, n), "prefect_requests_per_run": 3.0}


class Report(unittest.TestCase):
    def details(self):
        req = {"runs": 4, "nf_requests_per_run": 4.0, "prefect_requests_per_run": 9.0,
               "log_messages_per_run": 2.5}
        return {
            "ours": {"server": {"db": "sqlite", "phases": "all"},
                     "throughput": throughput(10, 2.0, 0.1, started_per_s=6.0, logs=2),
                     "requests_short": req, "requests_long": {**req, "log_messages_per_run": 3.0}},
            "theirs": {"server": {"db": "sqlite", "phases": "all"},
                       "throughput": throughput(10, 5.0, 3.0, started_per_s=1.5, given_up=2,
                                                logs=1),
                       "requests_short": {**req, "log_messages_per_run": 1.0}},
            "ours_postgres": {"server": {"db": "postgres", "phases": "throughput"},
                              "throughput": throughput(10, 1.0, 0.1, postgres=0.5,
                                                       started_per_s=5.0)},
            "theirs_postgres": {"server": {"db": "postgres", "phases": "throughput"},
                                "throughput": throughput(10, 4.0, 2.0, postgres=1.0,
                                                         started_per_s=2.0)},
        }

    def test_every_headline_key(self):
        h = report.headline({}, self.details())
        expected = {
            "throughput_ratio": 4.0, "throughput_ratio_postgres": 2.5,
            "throughput_started_per_s_ours_postgres": 5.0,
            "throughput_started_per_s_theirs_postgres": 2.0,
            "throughput_given_up_ours_postgres": 0, "throughput_given_up_theirs_postgres": 0,
            "throughput_given_up_theirs": 2,
            "prefect_log_messages_per_run_ours": 3.0, "prefect_log_messages_per_run_theirs": 1.0,
            "prefect_requests_per_run_ours": 9.0,
            "prefect_server_cpu_s_per_run_ours": 0.2, "prefect_server_cpu_s_per_run_theirs": 0.5,
            "prefect_server_cpu_ratio": 0.4, "prefect_server_cpu_ratio_postgres": 0.25,
            "postgres_cpu_s_per_run_ours": 0.05, "postgres_cpu_s_per_run_theirs": 0.1,
            "worker_cpu_s_per_run_theirs": 0.3,
        }
        for key, value in expected.items():
            self.assertEqual(h[key], value, key)

    def test_targets_and_markdown(self):
        cfg = {"scale": "small", "short": 5, "long": 15, "req": 4, "tput": 10, "lat": 8,
               "rss_ours": 30, "rss_theirs": 5, "rss_secs": 10, "poll_interval": 10,
               "instant_poll_interval": 60, "db": "both", "pg_phases": "throughput",
               "only": "both", "ours_env": {}}
        with tempfile.TemporaryDirectory() as out:
            report.write(cfg, self.details(), [], out)
            with open(os.path.join(out, "results.json")) as f:
                results = json.load(f)
            with open(os.path.join(out, "BENCHMARKS.md")) as f:
                md = f.read()
        verdicts = {r["target"].split(" (")[0]: r["verdict"] for r in results["targets"]}
        self.assertEqual(verdicts["Throughput ≥ 3× theirs on SQLite"], "met")
        self.assertEqual(verdicts["Throughput ≥ 2× theirs on Postgres"], "met")
        self.assertEqual(verdicts["Prefect server CPU per flow run ≤ 0.6× theirs on Postgres"],
                         "met")
        self.assertEqual(verdicts["Runs given up by ours in the throughput phases = 0"], "met")
        for heading in ("## Figures: SQLite-backed Prefect server",
                        "## Figures: Postgres-backed Prefect server",
                        "## Load during the throughput phase",
                        "## Prefect requests in the throughput phase (Postgres"):
            self.assertIn(heading, md)
        self.assertIn("`POST /api/work_pools/{pool}/get_scheduled_flow_runs` | 1.00 | 100 |", md)
        # Postgres' 1.0 CPU s over 20 s, the machine's 30 s over 20 s.
        self.assertIn("| theirs, Postgres | 20 | 0.2 | 0.05 | 0.1 | 1.5 | — | — |", md)


def step(server, postgres, requests=10, items=None):
    return {"requests": requests, "items": items or requests, "statuses": {"201": requests},
            "server_ms": server, "postgres_ms": postgres, "idle_reached": True}


class ServerCost(unittest.TestCase):
    """server_cost.py's arithmetic and its section of the report, with made-up costs."""

    def measurement(self):
        kinds = {k: step(10.0, 2.0) for k, _ in server_cost.KINDS}
        kinds.update(running=step(20.0, 5.0), completed=step(20.0, 5.0),
                     logs_single=step(3.0, 1.0),
                     # 61 lines per request: 2 ms per request, 1 ms per line.
                     logs_batched=step(63.0, 10.0, requests=2, items=122),
                     events=step(40.0, 0.0, requests=2, items=40))
        return {"runs": 10, "concurrency": 8, "idle_cpu_s_per_s": {"server": 0.02, "postgres": 0.0},
                "kinds": kinds, "block_read_measured": True}

    def test_the_floor_and_the_prediction(self):
        comp = {"ours": {"endpoints": {"POST /api/flow_runs/{id}/set_state": 2.0,
                                       "PATCH /api/flow_runs/{id}/labels": 1.0,
                                       "PATCH /api/flow_runs/{id}": 1.0, "POST /api/logs/": 0.1,
                                       "POST /api/events": 0.1,
                                       "POST /api/work_pools/{pool}/workers/heartbeat": 0.01},
                        "log_lines": 6.0, "source": "test"},
                "theirs": {"endpoints": {"POST /api/flow_runs/{id}/set_state": 2.0,
                                         "PATCH /api/flow_runs/{id}/labels": 1.0,
                                         "PATCH /api/flow_runs/{id}": 1.0,
                                         "GET /api/deployments/{id}": 2.0,
                                         "GET /api/flows/{id}": 1.0,
                                         "GET /api/block_documents/{id}": 1.0,
                                         "POST /api/logs/": 0.1},
                           "log_lines": 12.0, "source": "test"}}
        d = server_cost.derive(self.measurement()["kinds"], comp, measured_ratio=0.7)
        s = d["server_ms"]
        # Four protocol writes at 10 ms and the flow's two at 20 ms.
        self.assertEqual(s["protocol_floor_per_run"], 80.0)
        # Logs: 0.1 request × 2 ms + 6 lines × 1 ms; events: two at 40 / 20 ms each.
        self.assertEqual(s["ours_parts"]["logs"], 6.2)
        self.assertEqual(s["ours_parts"]["worker events (2)"], 4.0)
        # Two set_states, labels, infrastructure_pid; theirs' three reads besides.
        self.assertEqual(s["ours_per_run"], 20 + 10 + 10 + 6.2 + 4 + 40)
        self.assertEqual(s["theirs_per_run"], 20 + 10 + 10 + 20 + 10 + 10 + 12.2 + 4 + 40)
        self.assertEqual(s["floor_ratio"], round(80 / 136.2, 3))
        self.assertEqual(s["predicted_ratio"], round(90.2 / 136.2, 3))
        self.assertEqual(d["unmeasured"]["ours"],
                         {"POST /api/work_pools/{pool}/workers/heartbeat": 0.01})

    def test_the_section_renders_with_and_without_figures(self):
        sc = server_cost.result(self.measurement(), None)
        self.assertEqual(report.server_cost_section(None), [])
        self.assertEqual(report.server_cost_section({"kinds": {}}), [])
        md = "\n".join(report.server_cost_section(sc))
        self.assertIn(report.SERVER_COST_HEADING, md)
        self.assertIn("| `running`: ", md)
        self.assertIn("**Total**", md)
        keys = server_cost.flat_keys(sc)
        self.assertEqual(keys["prefect_server_cpu_ms_per_request_postgres"]["pending"], 10.0)
        self.assertEqual(server_cost.flat_keys(None), {})

    def test_a_section_is_replaced_or_inserted_before_the_method(self):
        section = ["", report.SERVER_COST_HEADING, "", "new", ""]
        old = f"# B\n\n## Targets\n\nx\n\n{report.SERVER_COST_HEADING}\n\nold\n\n## Method\n\nm\n"
        self.assertEqual(report.splice_section(old, report.SERVER_COST_HEADING, section),
                         f"# B\n\n## Targets\n\nx\n\n{report.SERVER_COST_HEADING}\n\nnew\n\n"
                         "## Method\n\nm\n")
        bare = "# B\n\n## Targets\n\nx\n\n## Method\n\nm\n"
        self.assertEqual(report.splice_section(bare, report.SERVER_COST_HEADING, section),
                         old.replace("old", "new"))

    def test_a_full_report_with_and_without_the_measurement(self):
        cfg = {"scale": "small", "short": 5, "long": 15, "req": 4, "tput": 10, "lat": 8,
               "rss_ours": 30, "rss_theirs": 5, "rss_secs": 10, "poll_interval": 10,
               "instant_poll_interval": 60, "db": "both", "pg_phases": "throughput",
               "only": "both", "ours_env": {}}
        details = Report().details()
        saved = report.SERVER_COST_JSON
        try:
            with tempfile.TemporaryDirectory() as out:
                # Older results: no measurement here, none kept from before.
                report.SERVER_COST_JSON = os.path.join(out, "absent.json")
                report.write(cfg, details, [], out)
                with open(os.path.join(out, "BENCHMARKS.md")) as f:
                    self.assertNotIn(report.SERVER_COST_HEADING, f.read())
                sc = server_cost.result(self.measurement(), {"details": details})
                report.write(cfg, details, [], out, server_cost=sc)
                with open(os.path.join(out, "BENCHMARKS.md")) as f:
                    md = f.read()
                with open(os.path.join(out, "results.json")) as f:
                    results = json.load(f)
                self.assertTrue(os.path.exists(os.path.join(out, "server_cost.json")))
        finally:
            report.SERVER_COST_JSON = saved
        self.assertIn(report.SERVER_COST_HEADING, md)
        self.assertLess(md.index(report.SERVER_COST_HEADING), md.index("## Method"))
        self.assertIn("prefect_server_cpu_floor_ratio_postgres", results)
        # This run's own request counts: theirs_postgres made 10 polls for 10 runs.
        self.assertEqual(sc["derived"]["composition"]["theirs"]["source"], "results.json (undated)")


if __name__ == "__main__":
    unittest.main()
