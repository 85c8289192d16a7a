"""Starting and stopping the two workers, and sampling their memory. Standard library only."""

import os
import signal
import subprocess
import threading
import time


def tree(pid):
    """The process and all its descendants (children files of every thread)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples the summed VmRSS of a process tree every `every` seconds while running; `peak_kb`
    is the highest sum seen. VmHWM (the kernel's own high-water mark, which no sampling can
    miss) is read per process at each sample too and kept as the upper bound for the tree."""

    def __init__(self, pid, every=0.2):
        self.pid, self.every = pid, every
        self.peak_kb = 0
        self.hwm_kb = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        pids = tree(self.pid)
        self.peak_kb = max(self.peak_kb, sum(status_kb(p, "VmRSS") for p in pids))
        for p in pids:
            self.hwm_kb[p] = max(self.hwm_kb.get(p, 0), status_kb(p, "VmHWM"))

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()

    def result_mb(self):
        return {
            "peak_rss_mb": round(self.peak_kb / 1024, 1),
            "vmhwm_mb": round(sum(self.hwm_kb.values()) / 1024, 1),
            "processes": len(self.hwm_kb),
        }


class Worker:
    """One worker process, with its output in a log file. `spawned_at` is taken just before the
    exec, for the start → first request figure."""

    def __init__(self, name, argv, env, log_path):
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.proc = None
        self.spawned_at = None

    def start(self):
        log = open(self.log_path, "ab")
        log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(self.argv)}\n".encode())
        log.flush()
        self.spawned_at = time.time()
        # Its own process group, so stopping it also stops anything it spawned.
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        # scripts/bench stops these too, should this driver itself be killed outright.
        pid_file = os.environ.get("BENCH_WORKER_PIDS")
        if pid_file:
            with open(pid_file, "a") as f:
                f.write(f"{self.proc.pid}\n")
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace=15):
        if not self.alive():
            return
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        except ProcessLookupError:
            pass

    def __enter__(self):
        return self if self.proc else self.start()

    def __exit__(self, *exc):
        self.stop()
