"""Process handling for the deployment benchmark (`bench_deploy.py`): start, watch, stop.

A `ProcessGroup` starts every process of one benchmark run in a session of its own (so
that a stuck process can be stopped with its whole process group without touching anything
else on the machine), follows their descendants (Flower's SuperExec starts its
ServerApp/ClientApp processes in new sessions, so session membership alone misses them),
samples their memory every 0.1 s, and at the end stops whatever is still alive by PID and
process group, even after a failure. Linux only: everything is read from /proc.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

KB = 1024
_TICKS = os.sysconf("SC_CLK_TCK")
MB = 1_000_000  # the benchmark suite's unit: 10^6 bytes


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _stat(pid: int) -> tuple[int, int, int, int] | None:
    """(ppid, pgid, start time, CPU time used) in clock ticks of a running process; None
    if it is gone or a zombie (a zombie holds no memory and only waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # The command name may hold spaces and parentheses: split after the last ')'.
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[1]), int(fields[2]), int(fields[19]), int(fields[11]) + int(fields[12])


_STATUS_KEYS = (b"VmRSS:", b"VmHWM:", b"RssAnon:", b"RssFile:")


def _memory_kb(pid: int) -> tuple[int, int, int, int] | None:
    """(VmRSS, VmHWM, RssAnon, RssFile) in KiB; None once the process is gone (or a
    zombie). RssFile counts file pages mapped in, such as memory-mapped blob files: they
    are page cache, shared and reclaimable, but the kernel counts them in RSS and VmHWM."""
    found: dict[bytes, int] = {}
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                key = line[: line.find(b":") + 1]
                if key in _STATUS_KEYS:
                    found[key] = int(line.split()[1])
    except OSError:
        return None
    if len(found) < len(_STATUS_KEYS):
        return None
    rss, hwm, anon, file = (found[k] for k in _STATUS_KEYS)
    return rss, hwm, anon, file


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    return " ".join([os.path.basename(argv[0]), *argv[1:]]) if argv else "?"


@dataclass
class Tracked:
    """A process of the run: one we started (`name` given) or a descendant of one."""

    pid: int
    start_ticks: int  # with the pid, identifies the process even after the pid is reused
    name: str
    cmdline: str
    popen: subprocess.Popen[bytes] | None = None
    peak_rss_kb: int = 0
    #: VmHWM as last read; the kernel's own peak, so the last read before exit is the peak.
    hwm_kb: int = 0
    #: ru_maxrss from wait4(): exact peak of a child we reaped ourselves.
    maxrss_kb: int | None = None
    #: RssAnon and RssFile in the sample where VmRSS peaked (what the peak is made of).
    anon_at_peak_kb: int = 0
    file_at_peak_kb: int = 0
    peak_anon_kb: int = 0
    #: CPU seconds (user + system): last sample, or exact from wait4() once reaped.
    cpu_s: float = 0.0
    returncode: int | None = None

    def alive(self) -> bool:
        st = _stat(self.pid)
        return st is not None and st[2] == self.start_ticks

    @property
    def peak_kb(self) -> int:
        return max(self.peak_rss_kb, self.hwm_kb, self.maxrss_kb or 0)


@dataclass
class ProcessGroup:
    """All processes of one run, their memory, a memory guard and their teardown."""

    log_dir: Path
    max_rss_mb: float = 18_000.0
    interval_s: float = 0.1
    procs: dict[tuple[int, int], Tracked] = field(default_factory=dict)
    peak_sum_rss_kb: int = 0
    peak_procs: int = 0
    guard_tripped: bool = False
    listen: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    # -- starting -----------------------------------------------------------------------
    def spawn(
        self, name: str, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]
    ) -> Tracked:
        """Start `argv` in a new session, stdout and stderr to `<log_dir>/<name>.log`."""
        with open(self.log_dir / f"{name}.log", "wb") as log:
            popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        st = _stat(popen.pid)
        proc = Tracked(
            pid=popen.pid,
            start_ticks=st[2] if st else -1,
            name=name,
            cmdline=" ".join(argv),
            popen=popen,
        )
        with self._lock:
            self.procs[(proc.pid, proc.start_ticks)] = proc
        return proc

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    # -- sampling -----------------------------------------------------------------------
    def start(self) -> ProcessGroup:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def stop_sampling(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        last_scan = last_ss = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_scan >= 0.2:  # a full /proc walk costs more than reading statuses
                last_scan = now
                self._adopt_descendants()
            total = count = 0
            with self._lock:
                procs = list(self.procs.values())
            for proc in procs:
                mem = _memory_kb(proc.pid)
                st = _stat(proc.pid)
                if mem is None or st is None or st[2] != proc.start_ticks:
                    continue  # gone, a zombie, or its pid now names another process
                rss, hwm, anon, file = mem
                if rss > proc.peak_rss_kb:
                    proc.peak_rss_kb = rss
                    proc.anon_at_peak_kb, proc.file_at_peak_kb = anon, file
                proc.peak_anon_kb = max(proc.peak_anon_kb, anon)
                proc.hwm_kb = max(proc.hwm_kb, hwm)
                if proc.returncode is None:
                    proc.cpu_s = st[3] / _TICKS
                total += rss
                count += 1
            self.peak_sum_rss_kb = max(self.peak_sum_rss_kb, total)
            self.peak_procs = max(self.peak_procs, count)
            if total * KB / MB > self.max_rss_mb and not self.guard_tripped:
                # The machine has 24 GiB and no swap: stop the run before the kernel's OOM
                # killer picks a victim that may not be ours.
                self.guard_tripped = True
                self.kill(grace_s=0.0, reap=False)  # the main thread reaps
            if now - last_ss >= 2.0:
                last_ss = now
                self.record_listeners()
            self._stop.wait(self.interval_s)

    def _adopt_descendants(self) -> None:
        children: dict[int, list[tuple[int, int]]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                st = _stat(int(entry))
                if st is not None:
                    children.setdefault(st[0], []).append((int(entry), st[2]))
        with self._lock:
            todo = [p.pid for p in self.procs.values() if p.alive()]
            while todo:
                for pid, ticks in children.get(todo.pop(), []):
                    if (pid, ticks) not in self.procs:
                        self.procs[(pid, ticks)] = Tracked(
                            pid=pid, start_ticks=ticks, name="", cmdline=_cmdline(pid)
                        )
                        todo.append(pid)

    def record_listeners(self) -> None:
        """Add the local addresses our processes listen on (evidence of loopback-only)."""
        with self._lock:
            pids = {p.pid for p in self.procs.values()}
        try:
            out = subprocess.run(
                ["ss", "-ltnpH"], capture_output=True, text=True, timeout=5, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return
        for line in out.splitlines():
            if any(f"pid={pid}," in line for pid in pids):
                self.listen.add(line.split()[3].rsplit(":", 1)[0])

    # -- waiting and stopping -----------------------------------------------------------
    def wait(self, proc: Tracked, timeout_s: float) -> int | None:
        """Wait for a child we started; reap it with wait4() to get its exact peak RSS."""
        assert proc.popen is not None
        deadline = time.monotonic() + timeout_s
        while proc.returncode is None:
            try:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: no exit status to report
                return None
            if pid == proc.pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                proc.popen.returncode = proc.returncode  # Popen must not wait on it again
                proc.maxrss_kb = usage.ru_maxrss  # KiB on Linux
                proc.cpu_s = usage.ru_utime + usage.ru_stime
                break
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
        return proc.returncode

    def kill(self, *, grace_s: float = 5.0, reap: bool = True) -> list[int]:
        """Stop every tracked process still alive: SIGTERM, then SIGKILL after `grace_s`.

        Each signal goes to the process and, where it leads its own process group (every
        process we started does), to that group, so that grandchildren go too. Processes
        are identified by pid + start time, so a reused pid is never signalled.
        """
        self._adopt_descendants()
        with self._lock:
            alive = [p for p in self.procs.values() if p.alive()]
            started = [p for p in self.procs.values() if p.popen is not None]
        signals = [signal.SIGTERM, signal.SIGKILL] if grace_s > 0 else [signal.SIGKILL]
        for sig in signals:
            # Started processes are signalled even when gone: their group may outlive them.
            for proc in {id(p): p for p in [*alive, *started]}.values():
                _signal(proc, sig)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and any(p.alive() for p in alive):
                time.sleep(0.1)
            alive = [p for p in alive if p.alive()]
            if not alive:
                break
        for proc in list(self.procs.values()):  # reap our children: no zombies left behind
            if reap and proc.popen is not None and proc.returncode is None:
                self.wait(proc, 2.0)
        return sorted({p.pid for p in self.procs.values()})

    def per_process(self) -> list[dict[str, object]]:
        return [
            {
                "name": p.name or "(descendant)",
                "cmd": p.cmdline[:160],
                "peak_rss_mb": round(p.peak_kb * KB / MB, 1),
                "vmhwm_mb": round(p.hwm_kb * KB / MB, 1),
                "wait4_maxrss_mb": None if p.maxrss_kb is None else round(p.maxrss_kb * KB / MB, 1),
                "anon_at_peak_mb": round(p.anon_at_peak_kb * KB / MB, 1),
                "file_at_peak_mb": round(p.file_at_peak_kb * KB / MB, 1),
                "peak_anon_mb": round(p.peak_anon_kb * KB / MB, 1),
                "cpu_s": round(p.cpu_s, 2),
                "rc": p.returncode,
            }
            for p in self.procs.values()
        ]


def _signal(proc: Tracked, sig: signal.Signals) -> None:
    st = _stat(proc.pid)
    if st is not None and st[2] == proc.start_ticks:
        with contextlib.suppress(OSError):
            os.kill(proc.pid, sig)
    if proc.pid == os.getpgrp():
        return  # never the benchmark's own group
    leads = st is not None and st[2] == proc.start_ticks and st[1] == proc.pid
    # A process we started leads its own group; its group outlives it while members remain,
    # and the kernel never hands out a pid that still names a group, so a free pid with a
    # live group of that id is ours.
    ours = proc.popen is not None and (
        proc.returncode is None or not os.path.exists(f"/proc/{proc.pid}")
    )
    if leads or ours:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, sig)
