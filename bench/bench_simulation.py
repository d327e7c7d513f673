"""Simulation benchmark: Pollen (in-process and Ray engines) against flwr 1.42 with Ray.

    .venv/bin/python bench/bench_simulation.py [--clients 100,1000] [--reps 3]
        [--params 100000] [--rounds 3] [--only pollen-in-process,pollen-ray,flwr-ray]

The workload of the incumbent's published figures: N virtual clients, a model of 100k
float32 parameters in 10 arrays, 3 rounds, every client sampled every round, and a fit
that returns the parameters + 0.01 (no training), so that what is timed is the
framework. Each run is a fresh process in its own session; the implementations alternate
within each repetition so that machine noise hits all alike. A sampler adds up the RSS
and PSS of every process of the session (Ray's raylet, GCS and workers included) every
0.2 s; the driver process reports its own peak RSS (getrusage).

flwr[simulation]==1.42.0 (with Ray) is installed by this script into its own virtual
environment (bench/.venv-flwr-sim); it is never a dependency of the project. Ray for the
Pollen side comes from the `simulation` extra (`pip install -e '.[simulation]'`).

Writes every run to bench/results/simulation.jsonl, the medians and ratios to
bench/results/simulation-summary.json, and prints a table. Targets of the issue: at 1000
clients the in-process engine is >= 20x faster per round than flwr with a peak RSS no
higher; the Ray engine is within 3x of the in-process one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import venv
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FLWR_SPEC = "flwr[simulation]==1.42.0"
IMPLS = ("pollen-in-process", "pollen-ray", "flwr-ray")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def ensure_flwr(env_dir: Path) -> Path:
    """The python of a venv holding flwr 1.42 with its Ray extra; installed on first use."""
    python = env_dir / "bin" / "python"
    probe = [str(python), "-c", "import flwr, ray; assert flwr.__version__ == '1.42.0'"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python
    print(f"installing {FLWR_SPEC} into {env_dir} (one time) ...", file=sys.stderr, flush=True)
    venv.create(env_dir, with_pip=True, clear=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", FLWR_SPEC, "numpy"]
    subprocess.run(pip, check=True, timeout=1800)
    return python


def _session(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces): state, ppid, pgrp, session.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 3 and int(fields[3]) == sid:
            pids.append(int(entry))
    return pids


def _memory_kb(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss, pss


def run_once(command: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run one benchmark process in its own session; its JSON line plus session memory."""
    started = time.time()
    proc = subprocess.Popen(
        command,
        cwd=HERE,
        env={**env, "BENCH_T0": repr(started)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    peak = {"rss_kb": 0, "pss_kb": 0, "processes": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            pids = _session(proc.pid)
            memory = [_memory_kb(p) for p in pids]
            peak["rss_kb"] = max(peak["rss_kb"], sum(m[0] for m in memory))
            peak["pss_kb"] = max(peak["pss_kb"], sum(m[1] for m in memory))
            peak["processes"] = max(peak["processes"], len(pids))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | str = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = "timeout"
    wall = time.time() - started
    stop.set()
    sampler.join()
    time.sleep(0.5)
    leftovers = _session(proc.pid)
    for pid in leftovers:  # processes this run started (Ray's), by id
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    inner = next(
        (json.loads(line) for line in out.splitlines() if '"simulation_inner"' in line), None
    )
    row: dict[str, Any] = {
        "rc": code,
        "wall_s": round(wall, 3),
        "session_peak_rss_mb": round(peak["rss_kb"] / 1e3, 1),
        "session_peak_pss_mb": round(peak["pss_kb"] / 1e3, 1),
        "session_peak_processes": peak["processes"],
        "leftover_processes_killed": len(leftovers),
    }
    if inner is not None:
        row.update(inner)
    if code != 0 or inner is None:
        row["stderr_tail"] = err[-2000:]
    return row


def command(
    impl: str, flwr_python: Path | None, args: argparse.Namespace, clients: int
) -> list[str]:
    common = ["--clients", str(clients), "--params", str(args.params), "--rounds", str(args.rounds)]
    if impl == "flwr-ray":
        assert flwr_python is not None
        return [str(flwr_python), str(HERE / "_flwr_sim.py"), *common]
    engine = impl.removeprefix("pollen-")
    return [sys.executable, str(HERE / "_pollen_sim.py"), *common, "--engine", engine]


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [float(r[key]) for r in rows if r.get(key) is not None]
    return round(statistics.median(values), 4) if values else None


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("rc") == 0 and row.get("correct"):
            groups.setdefault((row["impl"], row["clients"]), []).append(row)
    summary = []
    for (impl, clients), runs in sorted(groups.items(), key=lambda g: (g[0][1], g[0][0])):
        for run in runs:
            run["round_1_s"] = run["round_s"][0]
            run["later_rounds_s"] = statistics.median(run["round_s"][1:] or run["round_s"])
            run["mean_round_s"] = statistics.mean(run["round_s"])
        summary.append({
            "impl": impl, "clients": clients, "runs": len(runs),
            **{key: _median(runs, key) for key in (
                "round_1_s", "later_rounds_s", "mean_round_s", "wall_s", "startup_s",
                "self_peak_rss_mb", "session_peak_rss_mb", "session_peak_pss_mb")},
        })  # fmt: skip
    return summary


def ratios(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(s["impl"], s["clients"]): s for s in summary}
    out = []
    for clients in sorted({s["clients"] for s in summary}):
        ours, ray, flwr = (by.get((i, clients)) for i in IMPLS)
        row: dict[str, Any] = {"clients": clients}
        if ours and flwr:
            for key in ("later_rounds_s", "round_1_s", "mean_round_s"):
                row[f"flwr_over_pollen_{key}"] = round(flwr[key] / ours[key], 1)
            row["pollen_over_flwr_self_rss"] = round(
                ours["self_peak_rss_mb"] / flwr["self_peak_rss_mb"], 2
            )
            row["pollen_over_flwr_session_pss"] = round(
                ours["session_peak_pss_mb"] / flwr["session_peak_pss_mb"], 2
            )
        if ours and ray:
            row["ray_over_in_process_later_rounds"] = round(
                ray["later_rounds_s"] / ours["later_rounds_s"], 2
            )
        if ray and flwr:
            row["flwr_over_pollen_ray_later_rounds"] = round(
                flwr["later_rounds_s"] / ray["later_rounds_s"], 1
            )
        out.append(row)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="100,1000")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--params", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default=",".join(IMPLS))
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--flwr-venv", type=Path, default=HERE / ".venv-flwr-sim")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    impls = [i for i in args.only.split(",") if i]
    unknown = set(impls) - set(IMPLS)
    if unknown:
        ap.error(f"unknown implementation(s) {sorted(unknown)}; choose from {IMPLS}")
    flwr_python = ensure_flwr(args.flwr_venv) if "flwr-ray" in impls else None
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]))
    env.pop("VIRTUAL_ENV", None)
    rows: list[dict[str, Any]] = []
    for clients in [int(c) for c in args.clients.split(",")]:
        for rep in range(args.reps):
            for impl in impls:
                print(f"{clients:>5} clients, run {rep + 1}/{args.reps}: {impl}", file=sys.stderr,
                      flush=True)  # fmt: skip
                row = run_once(command(impl, flwr_python, args, clients), env, args.timeout)
                row.setdefault("impl", impl)
                row.setdefault("clients", clients)
                row["rep"] = rep
                rows.append(row)
                print(f"      rounds {row.get('round_s')}  wall {row['wall_s']} s  "
                      f"rss {row.get('self_peak_rss_mb')} MB  rc {row['rc']}", file=sys.stderr,
                      flush=True)  # fmt: skip
    summary = summarize(rows)
    comparison = ratios(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "simulation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = {
        "workload": {"params": args.params, "arrays": 10, "rounds": args.rounds,
                     "fraction": 1.0, "fit": "parameters + 0.01", "reps": args.reps},
        "summary": summary,
        "ratios": comparison,
    }  # fmt: skip
    (args.out / "simulation-summary.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"{'clients':>7} {'implementation':<18} {'round 1 s':>9} {'later s':>8} {'mean s':>8} "
          f"{'wall s':>7} {'self RSS MB':>11} {'session PSS MB':>14}")  # fmt: skip
    for s in summary:
        print(f"{s['clients']:>7} {s['impl']:<18} {s['round_1_s']:>9.3f} "
              f"{s['later_rounds_s']:>8.3f} {s['mean_round_s']:>8.3f} {s['wall_s']:>7.1f} "
              f"{s['self_peak_rss_mb']:>11.0f} {s['session_peak_pss_mb']:>14.0f}")  # fmt: skip
    for row in comparison:
        print(json.dumps(row))
    return 0 if all(r["rc"] == 0 and r.get("correct") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
