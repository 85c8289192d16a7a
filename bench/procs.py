"""Starting and stopping the processes the driver runs (the workers, each segment's Prefect
server and proxy), sampling their memory and reading their CPU time. Standard library only."""

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


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU seconds of a process tree so far: each live process's own time and that
    of its children it has already reaped (cutime, cstime), so a backend that came and went
    between two readings still counts, and nothing counts twice."""
    ticks = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                # Fields after the command name (which may hold spaces) start at field 3:
                # utime, stime, cutime, cstime are fields 14-17.
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(x) for x in fields[11:15])
    return ticks / CLOCK_TICKS


def machine_cpu_seconds():
    """CPU seconds every process on the machine has used since boot (all cores): how much else
    ran beside what is measured (this machine may be shared)."""
    with open("/proc/stat") as f:
        # cpu user nice system idle iowait irq softirq steal ... (guest time is inside user)
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


class CpuMeter:
    """CPU seconds of several named process trees (a None pid is not measured), and with
    `machine` of the whole machine, between readings: `read()` returns the seconds each used
    since the meter was made."""

    def __init__(self, machine=False, **pids):
        self.readers = {k: (lambda p=p: cpu_seconds(p)) for k, p in pids.items() if p is not None}
        if machine:
            self.readers["machine"] = machine_cpu_seconds
        self.at = time.time()
        self.start = {k: read() for k, read in self.readers.items()}

    def read(self):
        out = {f"{k}_cpu_s": round(read() - self.start[k], 2) for k, read in self.readers.items()}
        out["wall_s"] = round(time.time() - self.at, 2)
        return out


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


class Proc:
    """One process the driver starts (a worker, a Prefect server, a proxy), in its own process
    group, with its output in a log file. `spawned_at` is taken just before the exec, for the
    start → first request figure. With `out_path`, its stdout goes there instead."""

    def __init__(self, name, argv, env, log_path, out_path=None):
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.out_path = out_path
        self.proc = None
        self.spawned_at = None

    def start(self):
        log = open(self.log_path, "ab")
        log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(self.argv)}\n".encode())
        log.flush()
        out = open(self.out_path, "wb") if self.out_path else log
        self.spawned_at = time.time()
        # Its own process group, so stopping it also stops anything it spawned.
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        out.close()
        # scripts/bench stops these too, should this driver itself be killed outright.
        pid_file = os.environ.get("BENCH_CHILD_PIDS")
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
