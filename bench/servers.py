"""A fresh Prefect server (and its counting proxy) for each segment of the bench, so that each
worker meets a server holding only its own runs, on SQLite or on the Postgres cluster
scripts/bench started. Standard library only."""

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request

from procs import Proc

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env():
    """The environment without the caller's Prefect or worker settings."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "PFNF_", "NORTHFLANK_", "BENCH_"))}


def tail(path, lines=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def postgres_pid():
    """The postmaster of scripts/bench's cluster (its backends are its children)."""
    pid = os.environ.get("BENCH_PG_PID")
    return int(pid) if pid else None


class Servers:
    """One segment's Prefect server on 127.0.0.1 (temporary PREFECT_HOME; SQLite in it, or a
    fresh database of the Postgres cluster) and a counting proxy in front of it with one port,
    named after the worker. Used as a context manager: both are stopped on the way out."""

    def __init__(self, segment, side, db, run_dir):
        self.segment, self.side, self.db, self.run_dir = segment, side, db, run_dir
        self.server = self.proxy = None
        self.port = self.proxy_port = None

    @property
    def api(self):
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def pid(self):
        return self.server.proc.pid

    def database_url(self):
        if self.db == "sqlite":
            return None
        base = os.environ.get("BENCH_PG_URL")
        if not base:
            raise RuntimeError("a Postgres segment needs BENCH_PG_URL (scripts/bench sets it)")
        # scripts/bench made one empty database per worker: bench_ours, bench_theirs.
        return f"{base}/bench_{self.side}"

    def start(self):
        self.port = free_port()
        home = os.path.join(self.run_dir, f"prefect-{self.segment}")
        os.makedirs(home, exist_ok=True)
        env = {**clean_env(), "PREFECT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_SERVER_UI_ENABLED": "false",
               # Runs count as Late only after an hour: the late-runs service rewrites every
               # overdue run's state every few seconds, which would load the server with the
               # bench's own backlog.
               "PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS": "3600"}
        url = self.database_url()
        if url:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = url
        log = os.path.join(self.run_dir, f"prefect-{self.segment}.log")
        self.server = Proc(f"prefect-{self.segment}",
                           [os.environ["BENCH_PREFECT_BIN"], "server", "start", "--host",
                            "127.0.0.1", "--port", str(self.port)], env, log).start()
        ports_file = os.path.join(self.run_dir, f"proxy-{self.segment}.ports")
        self.proxy = Proc(f"proxy-{self.segment}",
                          [sys.executable, os.path.join(HERE, "proxy.py"), "--upstream",
                           f"http://127.0.0.1:{self.port}", "--listen", f"{self.side}=0"],
                          clean_env(), os.path.join(self.run_dir, f"proxy-{self.segment}.log"),
                          out_path=ports_file).start()
        self._await_server(log)
        self.proxy_port = self._await_proxy(ports_file)[self.side]
        return self

    def _await_server(self, log, timeout=240):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.server.alive():
                raise RuntimeError(f"the Prefect server for {self.segment} exited:\n{tail(log)}")
            try:
                with urllib.request.urlopen(f"{self.api}/health", timeout=5):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        raise RuntimeError(f"the Prefect server for {self.segment} did not answer within "
                           f"{timeout}s:\n{tail(log)}")

    def _await_proxy(self, ports_file, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with open(ports_file) as f:
                    line = f.readline()
                if line.endswith("\n"):
                    return json.loads(line)
            except OSError:
                pass
            if not self.proxy.alive():
                break
            time.sleep(0.25)
        raise RuntimeError(f"the proxy for {self.segment} did not start: "
                           f"{tail(self.proxy.log_path)}")

    def stop(self):
        for proc in (self.proxy, self.server):
            if proc:
                proc.stop(grace=30)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()
