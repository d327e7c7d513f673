"""Where Pollen's deployment round spends its time and memory (companion of bench_deploy.py).

    .venv/bin/python bench/_deploy_profile.py [--clients 10] [--params 10000000]
        [--rounds 3] [--out bench/results/deploy-profile.json]

Three Pollen runs of the deployment benchmark's setup (server CLI, insecure, N client
processes, FedAvg), each showing something else:

  plain       no instrumentation: CPU seconds of every process and of every server thread
              (/proc/<pid>/task), and the server's memory every 50 ms split into anonymous
              memory (heap, buffers) and file pages mapped in (memory-mapped blobs), with
              each sample placed in its round's phase (fit phase = tasks out -> last result
              accepted: downloads, client work, uploads, validation; aggregation; commit).
  cprofile    the server and client00 under cProfile, all their Python threads included
              (the server validates and aggregates in worker threads): top functions. The
              profiler's clock is each thread's own CPU time (time.thread_time), so waiting
              (epoll, locks, queues) and being preempted on the busy 2 cores count nothing:
              tottime is CPU spent in the function itself, C calls included.
  tracemalloc the server and client00 under tracemalloc: Python and numpy allocations at
              the traced peak, by allocation site, to compare with the anonymous RSS (what
              tracemalloc does not see is allocated in C: gRPC's buffers, or the
              allocator's free lists).

--server-env KEY=VALUE runs the server with extra environment, for experiments that change
no code, e.g. glibc's MALLOC_ARENA_MAX=2 or MALLOC_MMAP_THRESHOLD_=1048576 to see how much
of the server's RSS is freed memory the allocator keeps.

The server and client are wrapped by this same file (`wrap` sub-command), which runs the
`pollen` CLI in-process under the instrument and writes its findings at exit. cProfile and
tracemalloc slow the process they watch: take times from `plain`, proportions from the
others.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from _common import model
from _deploy_procs import KB, MB, ProcessGroup, Tracked
from bench_deploy import ARRAYS, HERE, ROOT, child_env, log_times, pollen_config, store_rounds

TICKS = os.sysconf("SC_CLK_TCK")
Row = dict[str, Any]


# -- in-process wrappers (run as the server or a client) --------------------------------


def wrap(instrument: str, out: Path, argv: list[str]) -> int:
    """Run `pollen <argv>` in this process under `instrument`, findings to `out`."""
    import pollen_cli  # noqa: PLC0415  (imported once the instrument is on)

    if instrument == "tracemalloc":
        return _with_tracemalloc(out, lambda: pollen_cli.main(argv))
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_in_thread(frame: FrameType, event: str, arg: object) -> None:
        # threading.setprofile runs this at a new thread's first event: enabling a
        # profiler there replaces this hook with the profiler, for that thread only.
        profile = cProfile.Profile(time.thread_time)
        with lock:
            profiles.append(profile)
        profile.enable()

    threading.setprofile(start_in_thread)
    main = cProfile.Profile(time.thread_time)
    main.enable()
    try:
        return pollen_cli.main(argv)
    finally:
        main.disable()
        threading.setprofile(None)
        stats = pstats.Stats(main)
        with lock:
            for profile in profiles:
                stats.add(profile)
        stats.dump_stats(str(out))


def _with_tracemalloc(out: Path, run: Any) -> int:
    tracemalloc.start(8)
    best: list[Any] = [0, None, 0.0]  # traced bytes, snapshot, time
    stop = threading.Event()

    def watch() -> None:
        # Snapshot whenever the traced total tops the last snapshot by 16 MB: the last
        # snapshot taken is within 16 MB of the peak and shows what made it.
        while not stop.wait(0.02):
            current, _ = tracemalloc.get_traced_memory()
            if current > best[0] + 16 * MB:
                best[:] = [current, tracemalloc.take_snapshot(), time.time()]

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        return int(run())
    finally:
        stop.set()
        thread.join()
        _, peak = tracemalloc.get_traced_memory()
        report: Row = {"traced_peak_mb": round(peak / MB, 1)}
        if best[1] is not None:
            snap = best[1]
            report["snapshot_traced_mb"] = round(best[0] / MB, 1)
            report["snapshot_time"] = best[2]
            report["top_sites"] = [
                {
                    "mb": round(stat.size / MB, 1),
                    "blocks": stat.count,
                    # Most recent frame first: the line that allocated, then its callers.
                    "where": [f"{f.filename}:{f.lineno}" for f in stat.traceback][::-1][:6],
                }
                for stat in snap.statistics("traceback")[:15]
            ]
        out.write_text(json.dumps(report, indent=1))


# -- the driver -------------------------------------------------------------------------


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds of each thread of `pid`, by thread id, with the thread's name."""
    out: dict[int, tuple[str, float]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            raw = Path(f"/proc/{pid}/task/{tid}/stat").read_bytes()
        except OSError:
            continue
        name = raw[raw.index(b"(") + 1 : raw.rindex(b")")].decode(errors="replace")
        fields = raw.rsplit(b")", 1)[1].split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / TICKS)
    return out


def memory(pid: int) -> tuple[int, int] | None:
    """(RssAnon, RssFile) of `pid` in KiB."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    got = {}
    for line in text.splitlines():
        if line.startswith(("RssAnon:", "RssFile:")):
            got[line.split(":")[0]] = int(line.split()[1])
    return (got["RssAnon"], got["RssFile"]) if len(got) == 2 else None


def watch_server(
    server: Tracked, samples: list[Row], threads: dict[int, tuple[str, float]]
) -> None:
    while server.returncode is None:
        mem = memory(server.pid)
        if mem is not None:
            samples.append({"t": time.time(), "anon_kb": mem[0], "file_kb": mem[1]})
        threads.update(thread_cpu(server.pid))  # a thread's last reading is its total
        time.sleep(0.05)


def phases(rounds: list[Row], commits: list[float]) -> list[tuple[str, float, float]]:
    """(label, start, end) of each round's fit phase, aggregation and commit."""
    out = []
    for rec, end in zip(rounds, commits, strict=False):
        start = end - float(rec["round_s"])
        fit_end = start + float(rec["fit_phase_s"] or 0)
        agg_end = fit_end + float(rec["aggregation_s"] or 0)
        out += [
            (f"round {rec['round']} fit phase", start, fit_end),
            (f"round {rec['round']} aggregation", fit_end, agg_end),
            (f"round {rec['round']} commit", agg_end, end + 0.05),
        ]
    return out


def top(path: Path, key: str, n: int = 25) -> list[str]:
    buf = io.StringIO()
    stats = pstats.Stats(str(path), stream=buf)
    stats.sort_stats(key).print_stats(n)
    lines = buf.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return [line.rstrip() for line in lines[start : start + n + 1] if line.strip()]


def listening_address(log: Path, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log.read_text()
        if "listening on " in text:
            return text.split("listening on ", 1)[1].split()[0]
        time.sleep(0.1)
    raise TimeoutError("the server did not listen")


def analyse(
    *,
    group: ProcessGroup,
    server: Tracked,
    threads: dict[int, tuple[str, float]],
    samples: list[Row],
    rounds: list[Row],
    commits: list[float],
) -> Row:
    """CPU and peak RSS of every process, server CPU by thread, server memory by phase."""
    clients = [p for p in group.procs.values() if p.name.startswith("client")]
    res: Row = {
        "server_peak_rss_mb": round(server.peak_kb * KB / MB, 1),
        "server_cpu_s": round(server.cpu_s, 2),
        "client_cpu_s": [round(p.cpu_s, 2) for p in clients],
        "clients_cpu_s_sum": round(sum(p.cpu_s for p in clients), 2),
        "client_peak_rss_mb": [round(p.peak_kb * KB / MB, 1) for p in clients],
        "client_anon_at_peak_mb": [round(p.anon_at_peak_kb * KB / MB, 1) for p in clients],
    }
    by_name: dict[str, float] = {}
    for name, cpu in threads.values():
        by_name[name] = by_name.get(name, 0.0) + cpu
    res["server_thread_cpu_s"] = {
        k: round(v, 2) for k, v in sorted(by_name.items(), key=lambda kv: -kv[1])
    }
    res["server_main_thread_cpu_s"] = round(threads.get(server.pid, ("", 0.0))[1], 2)
    if samples:
        peak = max(samples, key=lambda s: s["anon_kb"] + s["file_kb"])
        spans = phases(rounds, commits)

        def label(t: float) -> str:
            return next((name for name, a, b in spans if a <= t < b), "outside rounds")

        res["server_rss_peak"] = {
            "anon_mb": round(peak["anon_kb"] * KB / MB, 1),
            "file_mb": round(peak["file_kb"] * KB / MB, 1),
            "when": label(peak["t"]),
        }
        per_phase: dict[str, Row] = {}
        for s in samples:
            kind = label(s["t"]).removeprefix("round ").lstrip("0123456789 ")
            cur = per_phase.setdefault(kind, {"max_anon_mb": 0.0, "max_file_mb": 0.0})
            cur["max_anon_mb"] = max(cur["max_anon_mb"], round(s["anon_kb"] * KB / MB, 1))
            cur["max_file_mb"] = max(cur["max_file_mb"], round(s["file_kb"] * KB / MB, 1))
        res["server_rss_max_by_phase"] = per_phase
        start = samples[0]["t"]
        res["server_rss_timeline"] = [
            [round(s["t"] - start, 2), round(s["anon_kb"] * KB / MB), round(s["file_kb"] * KB / MB),
             label(s["t"])]
            for s in samples[:: max(1, len(samples) // 150)]
        ]  # fmt: skip
        res["round_spans_s"] = [[n, round(a - start, 2), round(b - start, 2)] for n, a, b in spans]
    return res


def run(args: argparse.Namespace, instrument: str, work: Path, npz: Path) -> Row:
    run_dir = work / instrument
    state = run_dir / "state"
    run_dir.mkdir(parents=True)
    toml = run_dir / "server.toml"
    pollen_config(toml, state, npz, args, args.clients)
    py, me = sys.executable, str(Path(__file__).resolve())
    res: Row = {"instrument": instrument}
    samples: list[Row] = []
    threads: dict[int, tuple[str, float]] = {}
    group = ProcessGroup(log_dir=run_dir, max_rss_mb=18_000).start()
    try:
        prefix = [py, "-m", "pollen_cli"]
        if instrument != "plain":
            prefix = [py, me, "wrap", instrument, str(run_dir / "server.prof"), "--"]
        server_env = child_env(**dict(kv.split("=", 1) for kv in args.server_env))
        server = group.spawn(
            "server", [*prefix, "server", "--config", str(toml)], cwd=ROOT, env=server_env
        )
        watcher = threading.Thread(target=watch_server, args=(server, samples, threads))
        watcher.start()
        address = listening_address(group.log("server"))
        clients = []
        for i in range(args.clients):
            argv = [py, "-m", "pollen_cli"]
            if instrument != "plain" and i == 0:
                argv = [py, me, "wrap", instrument, str(run_dir / "client00.prof"), "--"]
            argv += ["client", "--app", f"{HERE / '_deploy_app.py'}:BenchClient"]
            argv += ["--server", address, "--insecure"]
            clients.append(group.spawn(f"client{i:02d}", argv, cwd=ROOT, env=child_env()))
        res["server_rc"] = group.wait(server, 900)
        for c in clients:
            group.wait(c, 60)
        watcher.join()
    finally:
        group.kill()
        group.stop_sampling()
    rounds, res["correct"], res["run_status"] = store_rounds(state, npz, args.rounds)
    shutil.rmtree(state, ignore_errors=True)
    res["rounds"] = rounds
    log = group.log("server")
    commits = log_times(log, f"/{args.rounds} | ")
    res.update(
        analyse(
            group=group,
            server=server,
            threads=threads,
            samples=samples,
            rounds=rounds,
            commits=commits,
        )
    )
    for who in ("server", "client00"):
        prof = run_dir / f"{who}.prof"
        if instrument == "cprofile" and prof.exists():
            res[f"{who}_top_tottime"] = top(prof, "tottime")
            res[f"{who}_top_cumtime"] = top(prof, "cumulative", 40)
        if instrument == "tracemalloc" and prof.exists():
            res[f"{who}_tracemalloc"] = json.loads(prof.read_text())
    return res


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "wrap":
        instrument, out, sep, *argv = sys.argv[2:]
        assert sep == "--", "usage: wrap INSTRUMENT OUT -- POLLEN-ARGS..."
        return wrap(instrument, Path(out), argv)
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--params", type=int, default=10_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--only", choices=["plain", "cprofile", "tracemalloc"])
    ap.add_argument(
        "--server-env", action="append", default=[], metavar="KEY=VALUE",
        help="extra environment of the server (e.g. MALLOC_ARENA_MAX=2), repeatable",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=HERE / "results" / "deploy-profile.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pollen-bench-profile-"))
    print(f"logs: {work}", file=sys.stderr, flush=True)
    npz = work / "initial.npz"
    np.savez(npz, *model(args.params, ARRAYS))
    report: Row = {"clients": args.clients, "params": args.params, "rounds": args.rounds,
                   "server_env": args.server_env}  # fmt: skip
    for instrument in [args.only] if args.only else ["plain", "cprofile", "tracemalloc"]:
        print(f"{instrument} ...", file=sys.stderr, flush=True)
        report[instrument] = run(args, instrument, work, npz)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
