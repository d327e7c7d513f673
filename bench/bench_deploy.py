"""Deployment benchmark: Pollen against the incumbent (flwr 1.42), side by side on loopback.

    .venv/bin/python bench/bench_deploy.py                 # everything, 3 repetitions
    .venv/bin/python bench/bench_deploy.py --only pollen --reps 1 --params 1000000
    .venv/bin/python bench/bench_deploy.py [--clients 10] [--params 10000000] [--rounds 3]
        [--reps 3] [--only pollen|flwr-legacy|flwr-superlink] [--pollen-clients-extra 30]
        [--timeout 600] [--max-rss-mb 18000] [--out bench/results]

One process per server and per client, all on this machine over loopback gRPC (HTTP for
flwr's SuperLink, which no longer speaks gRPC to its SuperNodes), a model of --params
float32 parameters in 10 tensors, --rounds rounds of FedAvg with every client in every
round, and clients that return the received parameters + 0.01 with one example:

  pollen          `pollen server` (TLS off: `insecure = true`, plaintext on 127.0.0.1; the
                  production default is TLS) + N `python -m reference_client` processes
                  running bench/_deploy_app.py. Initial model from an .npz this script writes.
  flwr-legacy     flwr.server.start_server + N flwr.client.start_client (gRPC bidi stream),
                  legacy FedAvg (bench/_flwr_deploy_legacy.py).
  flwr-superlink  flower-superlink + N flower-supernode + `flwr run bench/deploy_app`
                  (Message-API FedAvg; SuperExec starts one ServerApp and N ClientApp
                  processes).
  pollen x 30     Pollen again with --pollen-clients-extra clients (memory must not grow).

Round time = from the moment the round's work is handed out (Pollen: first task ready;
flwr: configure_fit/configure_train start) to the end of aggregation (Pollen: the round
committed to the store). Every side starts round 1 only once all N clients are connected,
so process start-up is not in any round. Pollen's figures come from its store (the committed
rounds' history), flwr's from timers around its strategy.

Memory: each process's peak RSS (VmHWM from /proc, polled every 0.1 s, and for processes
this script started the exact ru_maxrss from wait4() when it reaps them), and the peak of
the summed RSS of every process of the run (descendants included), sampled every 0.1 s.

flwr is installed by this script into bench/.venv-flwr (`flwr==1.42.0`, which brings the
SuperLink's FastAPI/uvicorn/httpx); it is never a dependency of the project. Every process
binds 127.0.0.1 only (the `listen` field records what `ss` saw), runs in a session of its
own and is stopped by pid and process group at the end of its run, also on failure or
timeout; a memory guard kills a run whose processes together exceed --max-rss-mb. Logs go
to a temporary directory (printed; kept).

Output: one JSON line per run in <out>/deploy.jsonl, medians and target verdicts in
<out>/deploy-summary.json, and a table on stdout. Targets of the issue (item 10): Pollen at
least 10x faster per round than the SuperLink path and 4x faster than the legacy gRPC path;
Pollen's server peak RSS at most 3 x model bytes + 300 MB, with N clients and with 30.
Units: MB = 10^6 bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from _common import model
from _deploy_procs import KB, MB, ProcessGroup, Tracked, free_port, port_open

from pollen.tensors import decode_tensor
from reference_server.store import Store

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FLWR_SPEC = "flwr==1.42.0"
ARRAYS = 10
RUN_ID = "bench"
IMPLS = ("pollen", "flwr-legacy", "flwr-superlink")
TARGET_SPEEDUP = {"flwr-superlink": 10.0, "flwr-legacy": 4.0}
Row = dict[str, Any]


# -- environment ------------------------------------------------------------------------


def ensure_flwr(env_dir: Path) -> Path:
    """The flwr venv's python; installs flwr 1.42.0 there on first use."""
    python = env_dir / "bin" / "python"
    probe = [
        str(python),
        "-c",
        f"import flwr, fastapi, uvicorn, httpx; assert flwr.__version__ == '{FLWR_SPEC[6:]}'",
    ]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python
    print(f"installing {FLWR_SPEC} into {env_dir} (one time) ...", file=sys.stderr, flush=True)
    venv.create(env_dir, with_pip=True, clear=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", FLWR_SPEC, "numpy"]
    subprocess.run(pip, check=True, timeout=1800)
    subprocess.run(probe, check=True)
    return python


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    # Flower must not phone home (there is no network here anyway).
    env.update(FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1")
    for key in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(key, None)  # each side runs in its own venv, by its own interpreter
    return env


def versions(flwr_python: Path | None) -> Row:
    import google.protobuf  # noqa: PLC0415  (only for their versions)
    import grpc  # noqa: PLC0415

    out: Row = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
    }
    if flwr_python is not None:
        code = "import flwr, grpc, google.protobuf as p; print(flwr.__version__, p.__version__)"
        got = subprocess.run(
            [str(flwr_python), "-c", code], capture_output=True, text=True, check=False
        )
        out["flwr"], out["flwr_protobuf"] = [*got.stdout.split(), "?", "?"][:2]
    return out


@contextmanager
def process_group(log_dir: Path, args: argparse.Namespace) -> Iterator[ProcessGroup]:
    """A sampled ProcessGroup whose processes are all gone when the block exits."""
    log_dir.mkdir(parents=True, exist_ok=True)
    group = ProcessGroup(log_dir=log_dir, max_rss_mb=args.max_rss_mb).start()
    try:
        yield group
    finally:
        group.kill()
        group.stop_sampling()


def wait_until(check: Callable[[], bool], timeout_s: float, alive: Tracked) -> bool:
    """Poll `check` until true; false on timeout or once `alive` has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        if not alive.alive():
            return check()
        time.sleep(0.1)
    return False


def mb(kib: int | None) -> float | None:
    return None if kib is None else round(kib * KB / MB, 1)


def common_fields(group: ProcessGroup, server: Tracked) -> Row:
    clients = [p for p in group.procs.values() if p.name.startswith("client")]
    client_peaks = [p.peak_kb for p in clients]
    return {
        "server_peak_rss_mb": mb(server.peak_kb),
        "server_vmhwm_last_poll_mb": mb(server.hwm_kb),
        "server_wait4_maxrss_mb": mb(server.maxrss_kb),
        "client_peak_rss_mb_median": mb(int(statistics.median(client_peaks)))
        if client_peaks
        else None,
        "client_peak_rss_mb_max": mb(max(client_peaks)) if client_peaks else None,
        # What the server's peak is made of: anonymous memory (heap, buffers) and
        # file pages mapped in (page cache, e.g. memory-mapped blobs), which RSS counts too.
        "server_anon_at_peak_mb": mb(server.anon_at_peak_kb),
        "server_file_at_peak_mb": mb(server.file_at_peak_kb),
        "server_peak_anon_mb": mb(server.peak_anon_kb),
        # CPU seconds: on 2 cores, who burns the CPU decides the round time.
        "server_cpu_s": round(server.cpu_s, 2),
        "clients_cpu_s_sum": round(sum(p.cpu_s for p in clients), 2),
        "all_cpu_s_sum": round(sum(p.cpu_s for p in group.procs.values()), 2),
        "sum_peak_rss_mb": mb(group.peak_sum_rss_kb),
        "peak_processes": group.peak_procs,
        "memory_guard_tripped": group.guard_tripped,
        "listen": sorted(group.listen),
        "log_dir": str(group.log_dir),
        "processes": group.per_process(),
    }


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


# -- Pollen -----------------------------------------------------------------------------

LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def log_times(log: Path, needle: str) -> list[float]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = LOG_TIME.match(line)
        if m and needle in line:
            out.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return out


def pollen_config(path: Path, state: Path, npz: Path, args: argparse.Namespace, n: int) -> None:
    # json.dumps quotes a path as a valid TOML basic string.
    path.write_text(
        f"""[server]
address = "127.0.0.1:0"
state_dir = {json.dumps(str(state))}
insecure = true

[run]
id = "{RUN_ID}"
rounds = {args.rounds}
min_available_clients = {n}
start_timeout_s = {float(args.timeout)}
initial_model = {json.dumps(str(npz))}

[fit]
fraction = 1.0
min_clients = {n}
min_results = {n}
timeout_s = {float(args.timeout)}

[strategy]
name = "fedavg"
"""
    )


def store_rounds(state: Path, npz: Path, rounds: int) -> tuple[list[Row], bool | None, str]:
    """Each committed round's timing from the store, whether the final model is
    initial + 0.01 x rounds, and the run's status."""
    with Store(state) as store:
        run = store.state.load_run(RUN_ID)
        records = [r for r in store.state.rounds(RUN_ID) if r.round >= 1]
        out = []
        for rec in records:
            h = dict(rec.history)
            phase = h.get("fit_attempt_1")
            phase_s = phase.get("duration_s") if isinstance(phase, dict) else None
            agg_s = h.get("fit_aggregation_s")
            total = h.get("duration_s")
            commit_s = None
            if (
                isinstance(total, int | float)
                and isinstance(phase_s, int | float)
                and isinstance(agg_s, int | float)
            ):
                # What the round spends after aggregation: storing the new model, commit.
                commit_s = round(total - phase_s - agg_s, 3)
            out.append(
                {
                    "round": rec.round,
                    "round_s": total,
                    "fit_phase_s": phase_s,
                    "aggregation_s": agg_s,
                    "commit_and_rest_s": commit_s,
                    "accepted": phase.get("accepted") if isinstance(phase, dict) else None,
                    "failures": phase.get("failures") if isinstance(phase, dict) else None,
                }
            )
        correct = None
        if records and len(records) == rounds:
            final = [decode_tensor(t) for t in store.load_tensors(records[-1].parameters)]
            with np.load(npz) as initial:
                want = [initial[f"arr_{i}"] + np.float32(0.01 * rounds) for i in range(ARRAYS)]
            correct = len(final) == len(want) and all(
                np.allclose(a.ravel()[:1000], b.ravel()[:1000], atol=1e-4)
                for a, b in zip(final, want, strict=True)
            )
        return out, correct, f"{run.status}: {run.reason}" if run else "no run"


def run_pollen(args: argparse.Namespace, n: int, rep: int, work: Path, npz: Path) -> Row:
    name = f"pollen-c{n}-rep{rep}"
    run_dir = work / name
    state = run_dir / "state"
    res: Row = {
        "impl": "pollen",
        "clients": n,
        "rep": rep,
        "params": args.params,
        "rounds": args.rounds,
        "transport": "gRPC, plaintext (insecure = true)",
    }
    with process_group(run_dir, args) as group:
        toml = run_dir / "server.toml"
        pollen_config(toml, state, npz, args, n)
        py = sys.executable
        server = group.spawn(
            "server",
            [py, "-m", "pollen_cli", "server", "--config", str(toml)],
            cwd=ROOT,
            env=child_env(),
        )
        address: list[str] = []

        def listening() -> bool:
            m = re.search(r"listening on (\S+) \((\w+)\)", group.log("server").read_text())
            if m:
                address[:] = [m.group(1), m.group(2)]
            return m is not None

        if not wait_until(listening, 120, server):
            res.update(ok=False, error="server did not listen", log_tail=tail(group.log("server")))
            return res
        res["server_address"], res["server_transport"] = address
        t_clients = time.time()
        clients = [
            group.spawn(
                f"client{i:02d}",
                [
                    py,
                    "-m",
                    "reference_client",
                    "--app",
                    f"{HERE / '_deploy_app.py'}:BenchClient",
                    "--server",
                    address[0],
                    "--insecure",
                ],
                cwd=ROOT,
                env=child_env(),
            )
            for i in range(n)
        ]
        group.record_listeners()  # a short run may end between two periodic looks
        rc = group.wait(server, args.timeout)
        t_end = time.time()
        res["server_rc"] = "timeout" if rc is None and server.alive() else rc
        res["client_rcs"] = [group.wait(c, 60) for c in clients]
        res["wall_s"] = round(t_end - t_clients, 3)
    res.update(common_fields(group, server))
    log = group.log("server")
    connected, finished = log_times(log, " connected ("), log_times(log, " finished")
    if connected and finished:
        res["first_connection_to_run_end_s"] = round(finished[-1] - connected[0], 3)
    rounds: list[Row] = []
    correct: bool | None = None
    if (state / "state.db").exists():
        try:
            rounds, correct, res["run_status"] = store_rounds(state, npz, args.rounds)
        except Exception as exc:
            res["store_error"] = repr(exc)
        shutil.rmtree(state, ignore_errors=True)  # N x model bytes per round: free the disk
    res["round_s"] = [r["round_s"] for r in rounds]
    res["round_detail"] = rounds
    res["correct"] = correct
    res["ok"] = bool(
        res["server_rc"] == 0
        and len(rounds) == args.rounds
        and all(r["accepted"] == n for r in rounds)
        and correct
        and not group.guard_tripped
    )
    if not res["ok"]:
        res["log_tail"] = tail(log)
    return res


# -- flwr -------------------------------------------------------------------------------


def json_lines(path: Path) -> list[Row]:
    out = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):  # a line cut by a kill
                    out.append(json.loads(line))
    return out


def run_flwr_legacy(args: argparse.Namespace, rep: int, work: Path, flwr_py: Path) -> Row:
    n = args.clients
    run_dir = work / f"flwr-legacy-c{n}-rep{rep}"
    res: Row = {
        "impl": "flwr-legacy",
        "clients": n,
        "rep": rep,
        "params": args.params,
        "rounds": args.rounds,
        "transport": "gRPC bidi stream, insecure",
    }
    script = str(HERE / "_flwr_deploy_legacy.py")
    with process_group(run_dir, args) as group:
        port = free_port()
        server = group.spawn(
            "server",
            [
                str(flwr_py),
                script,
                "server",
                "--port",
                str(port),
                "--clients",
                str(n),
                "--params",
                str(args.params),
                "--arrays",
                str(ARRAYS),
                "--rounds",
                str(args.rounds),
                "--timeout",
                str(args.timeout),
            ],
            cwd=HERE,
            env=child_env(),
        )
        if not wait_until(lambda: port_open(port), 120, server):
            res.update(ok=False, error="server did not listen", log_tail=tail(group.log("server")))
            return res
        t_clients = time.time()
        clients = [
            group.spawn(
                f"client{i:02d}",
                [str(flwr_py), script, "client", "--server", f"127.0.0.1:{port}"],
                cwd=HERE,
                env=child_env(),
            )
            for i in range(n)
        ]
        group.record_listeners()
        rc = group.wait(server, args.timeout)
        res["wall_s"] = round(time.time() - t_clients, 3)
        res["server_rc"] = "timeout" if rc is None and server.alive() else rc
        res["client_rcs"] = [group.wait(c, 60) for c in clients]
    res.update(common_fields(group, server))
    lines = json_lines(group.log("server"))
    rounds = [x for x in lines if x.get("event") == "round"]
    done = next((x for x in lines if x.get("event") == "done"), None)
    res["round_s"] = [r["round_s"] for r in rounds]
    res["round_detail"] = rounds
    res["correct"] = done.get("correct") if done else None
    res["ok"] = bool(
        res["server_rc"] == 0
        and len(rounds) == args.rounds
        and all(r["results"] == n and not r["failures"] for r in rounds)
        and res["correct"]
        and not group.guard_tripped
    )
    if not res["ok"]:
        res["log_tail"] = tail(group.log("server"))
    return res


def run_flwr_superlink(args: argparse.Namespace, rep: int, work: Path, flwr_py: Path) -> Row:
    n = args.clients
    bindir = flwr_py.parent
    run_dir = work / f"flwr-superlink-c{n}-rep{rep}"
    home = run_dir / "flwr-home"  # throw-away FLWR_HOME: the `bench` connection lives here
    out_file = run_dir / "rounds.jsonl"
    res: Row = {
        "impl": "flwr-superlink",
        "clients": n,
        "rep": rep,
        "params": args.params,
        "rounds": args.rounds,
        "transport": "protobuf over HTTP (Fleet API of flwr 1.42), insecure",
    }
    with process_group(run_dir, args) as group:
        port = free_port()
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\n'
            f'address = "127.0.0.1:{port}"\ninsecure = true\n'
        )
        env = child_env(FLWR_HOME=str(home), PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
        superlink = group.spawn(
            "superlink",
            [
                str(bindir / "flower-superlink"),
                "--insecure",
                "--disable-runtime-dependency-installation",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=run_dir,
            env=env,
        )
        if not wait_until(lambda: port_open(port), 120, superlink):
            log_tail = tail(group.log("superlink"))
            res.update(ok=False, error="superlink did not listen", log_tail=log_tail)
            return res
        t_clients = time.time()
        for i in range(n):
            group.spawn(
                f"client{i:02d}",  # a SuperNode: the client side's long-lived process
                [
                    str(bindir / "flower-supernode"),
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{port}",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(free_port()),
                    "--max-retries",
                    "20",
                    "--max-wait-time",
                    "120",
                ],
                cwd=run_dir,
                env=env,
            )
        run_config = (
            f"out-file={json.dumps(str(out_file))} num-params={args.params} "
            f"num-arrays={ARRAYS} num-rounds={args.rounds} min-nodes={n} "
            f"timeout={float(args.timeout)}"
        )
        t_submit = time.time()
        submit = group.spawn(
            "flwr-run",
            [
                str(bindir / "flwr"),
                "run",
                str(HERE / "deploy_app"),
                "bench",
                "--run-config",
                run_config,
                "--format",
                "json",
            ],
            cwd=run_dir,
            env=env,
        )
        res["flwr_run_rc"] = group.wait(submit, 300)
        res["flwr_run_s"] = round(time.time() - t_submit, 3)

        def done() -> bool:
            return any(x.get("event") == "done" for x in json_lines(out_file))

        finished = res["flwr_run_rc"] == 0 and wait_until(done, args.timeout, superlink)
        res["wall_s"] = round(time.time() - t_clients, 3)
        res["submit_to_done_s"] = round(time.time() - t_submit, 3)
        group.record_listeners()
        res["server_rc"] = 0 if finished else "timeout or failure"
        # SuperLink and SuperNodes serve until stopped: the process group's exit stops them.
    procs = list(group.procs.values())

    def peak_of(*needles: str) -> int:
        return sum(p.peak_kb for p in procs if any(x in p.cmdline for x in needles))

    # Flower's server side is three processes: the SuperLink (which holds every message),
    # the SuperExec it starts for ServerApps, and the ServerApp process (the strategy).
    res.update(common_fields(group, superlink))
    res["client_peak_rss_mb_median"] = None  # SuperNode + SuperExec + ClientApp per client
    res["client_peak_rss_mb_max"] = None
    res["serverapp_peak_rss_mb"] = mb(peak_of("flwr-serverapp"))
    # The SuperLink's SuperExec names its parent; each SuperNode has one of its own.
    superexec = [
        p
        for p in procs
        if "flower-superexec" in p.cmdline and str(superlink.pid) in p.cmdline.split()
    ]
    res["server_side_peak_rss_mb_sum"] = mb(
        peak_of("flower-superlink", "flwr-serverapp") + sum(p.peak_kb for p in superexec)
    )
    res["clientapp_peak_rss_mb_max"] = mb(
        max((p.peak_kb for p in procs if "flwr-clientapp" in p.cmdline), default=0)
    )
    res["supernode_peak_rss_mb_max"] = mb(
        max((p.peak_kb for p in procs if "flower-supernode" in p.cmdline), default=0)
    )
    lines = json_lines(out_file)
    rounds = [x for x in lines if x.get("event") == "round"]
    fin = next((x for x in lines if x.get("event") == "done"), None)
    res["round_s"] = [r["round_s"] for r in rounds]
    res["round_detail"] = rounds
    res["correct"] = fin.get("correct") if fin else None
    res["ok"] = bool(
        fin
        and fin.get("ok")
        and len(rounds) == args.rounds
        and all(r["results"] == n and not r["failures"] for r in rounds)
        and res["correct"]
        and not group.guard_tripped
    )
    if not res["ok"]:
        res["server_done"] = fin
        res["log_tail"] = tail(group.log("superlink")) + tail(group.log("flwr-run"), 2000)
    return res


# -- summary ----------------------------------------------------------------------------


def median(xs: Sequence[float | None]) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return round(statistics.median(vals), 3) if vals else None


def summarize(rows: list[Row], args: argparse.Namespace) -> Row:
    model_mb = 4 * args.params / MB
    rss_limit = round(3 * model_mb + 300, 1)
    configs: dict[str, Row] = {}
    for impl, n in dict.fromkeys((r["impl"], r["clients"]) for r in rows):
        mine = [r for r in rows if (r["impl"], r["clients"]) == (impl, n)]
        ok = [r for r in mine if r["ok"]]
        rounds = [x for r in ok for x in r["round_s"]]
        configs[f"{impl} x{n}"] = {
            "impl": impl,
            "clients": n,
            "runs": len(mine),
            "runs_ok": len(ok),
            "rounds_measured": len(rounds),
            "median_round_s": median(rounds),
            "median_round_2plus_s": median([x for r in ok for x in r["round_s"][1:]]),
            "median_round1_s": median([r["round_s"][0] for r in ok if r["round_s"]]),
            "round_s_per_run": [r["round_s"] for r in mine],
            "median_server_peak_rss_mb": median([r.get("server_peak_rss_mb") for r in ok]),
            "max_server_peak_rss_mb": max(
                (r.get("server_peak_rss_mb") or 0 for r in ok), default=None
            ),
            "median_sum_peak_rss_mb": median([r.get("sum_peak_rss_mb") for r in ok]),
            "median_server_side_peak_rss_mb_sum": median(
                [r.get("server_side_peak_rss_mb_sum") for r in ok]
            ),
            # Client processes spawned -> run over (server exit; SuperLink: the ServerApp's
            # final line, so `flwr run` building and submitting the app is included).
            "median_wall_s": median([r.get("wall_s") for r in ok]),
            # CPU seconds of the whole run (start-up included): on a 2-core machine the
            # round time follows the CPU all processes together burn.
            "median_server_cpu_s": median([r.get("server_cpu_s") for r in ok]),
            "median_clients_cpu_s": median([r.get("clients_cpu_s_sum") for r in ok]),
            "median_all_cpu_s": median([r.get("all_cpu_s_sum") for r in ok]),
        }
    verdicts: list[Row] = []
    ours = configs.get(f"pollen x{args.clients}")
    for impl, target in TARGET_SPEEDUP.items():
        theirs = configs.get(f"{impl} x{args.clients}")
        if not (ours and theirs):
            continue
        for key, label in (("median_round_s", "all rounds"), ("median_round_2plus_s", "rounds 2+")):
            a, b = ours[key], theirs[key]
            speedup = round(b / a, 2) if a and b else None
            verdicts.append(
                {
                    "target": f"Pollen round >= {target:g}x faster than {impl} ({label})",
                    "pollen_s": a,
                    "flwr_s": b,
                    "speedup": speedup,
                    "required": target,
                    "met": None if speedup is None else speedup >= target,
                }
            )
    for n in dict.fromkeys([args.clients, args.pollen_clients_extra]):
        cfg = configs.get(f"pollen x{n}")
        if not cfg or cfg["median_server_peak_rss_mb"] is None:
            continue
        verdicts.append(
            {
                "target": f"Pollen server peak RSS <= 3 x model + 300 MB ({n} clients)",
                "pollen_mb": cfg["median_server_peak_rss_mb"],
                "max_over_runs_mb": cfg["max_server_peak_rss_mb"],
                "limit_mb": rss_limit,
                "met": cfg["median_server_peak_rss_mb"] <= rss_limit,
                "met_in_every_run": cfg["max_server_peak_rss_mb"] <= rss_limit,
            }
        )
    return {
        "model_mb": model_mb,
        "rss_limit_mb": rss_limit,
        "configs": configs,
        "verdicts": verdicts,
    }


def print_table(summary: Row) -> None:
    head = (
        f"{'implementation':<22}{'ok':>6}{'round s':>9}{'rnd 2+ s':>10}{'round 1 s':>10}"
        f"{'server RSS MB':>15}{'sum RSS MB':>12}{'wall s':>8}{'CPU s':>8}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for key, c in summary["configs"].items():

        def f(x: float | None, w: int, nd: int = 2) -> str:
            return f"{'-':>{w}}" if x is None else f"{x:>{w}.{nd}f}"

        server = c["median_server_peak_rss_mb"]
        if c["impl"] == "flwr-superlink":  # SuperLink + SuperExec + ServerApp
            server = c["median_server_side_peak_rss_mb_sum"]
        print(
            f"{key:<22}{c['runs_ok']:>3}/{c['runs']:<2}{f(c['median_round_s'], 9)}"
            f"{f(c['median_round_2plus_s'], 10)}{f(c['median_round1_s'], 10)}"
            f"{f(server, 15, 1)}{f(c['median_sum_peak_rss_mb'], 12, 1)}"
            f"{f(c['median_wall_s'], 8, 1)}{f(c['median_all_cpu_s'], 8, 1)}"
        )
    print(
        "(medians over runs; round columns pool every round of every run; server RSS for\n"
        " flwr-superlink = SuperLink + its SuperExec + ServerApp peaks; CPU s = all processes\n"
        " of a run, start-up included)\n"
    )
    for v in summary["verdicts"]:
        state = {True: "met", False: "MISSED", None: "n/a"}[v["met"]]
        if "speedup" in v:
            print(
                f"{v['target']}: {v['flwr_s']} s / {v['pollen_s']} s = {v['speedup']}x -> {state}"
            )
        else:
            print(
                f"{v['target']}: median {v['pollen_mb']} MB (max {v['max_over_runs_mb']}) "
                f"<= {v['limit_mb']} MB -> {state}"
            )


# -- main -------------------------------------------------------------------------------


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception so every `finally` stops its processes.
    raise SystemExit(128 + signum)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--params", type=int, default=10_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", choices=IMPLS, help="run one implementation only")
    ap.add_argument(
        "--pollen-clients-extra",
        type=int,
        default=30,
        help="also run Pollen with this many clients (0: don't)",
    )
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run")
    ap.add_argument(
        "--max-rss-mb",
        type=float,
        default=18_000,
        help="memory guard: kill a run whose processes together exceed this (MB)",
    )
    ap.add_argument("--flwr-venv", type=Path, default=HERE / ".venv-flwr")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="results directory")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    impls = [args.only] if args.only else list(IMPLS)
    flwr_py = ensure_flwr(args.flwr_venv) if any(i.startswith("flwr") for i in impls) else None
    work = Path(tempfile.mkdtemp(prefix="pollen-bench-deploy-"))
    print(f"logs: {work}", file=sys.stderr, flush=True)
    npz = work / "initial.npz"
    np.savez(npz, *model(args.params, ARRAYS))
    plan: list[tuple[str, int]] = [(i, args.clients) for i in impls]
    if (
        "pollen" in impls
        and args.pollen_clients_extra
        and args.pollen_clients_extra != args.clients
    ):
        plan.append(("pollen", args.pollen_clients_extra))
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / "deploy.jsonl"
    jsonl.write_text("")
    rows: list[Row] = []
    env = versions(flwr_py)
    for rep in range(1, args.reps + 1):
        # Alternate implementations within each repetition, so drift in the (shared,
        # noisy) machine's load hits every implementation alike.
        for impl, n in plan:
            print(f"rep {rep}/{args.reps}: {impl} x{n} ...", file=sys.stderr, flush=True)
            t0 = time.time()
            if impl == "pollen":
                row = run_pollen(args, n, rep, work, npz)
            else:
                assert flwr_py is not None
                runner = run_flwr_legacy if impl == "flwr-legacy" else run_flwr_superlink
                row = runner(args, rep, work, flwr_py)
            row["driver_s"] = round(time.time() - t0, 1)
            row["env"] = env
            rows.append(row)
            with jsonl.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(
                f"  ok={row['ok']} rounds={row.get('round_s')} "
                f"server_peak={row.get('server_peak_rss_mb')} MB "
                f"sum_peak={row.get('sum_peak_rss_mb')} MB",
                file=sys.stderr,
                flush=True,
            )
    summary = summarize(rows, args)
    summary.update(
        clients=args.clients,
        params=args.params,
        arrays=ARRAYS,
        rounds=args.rounds,
        reps=args.reps,
        env=env,
        pollen_transport="gRPC plaintext (insecure = true, TLS off)",
        logs=str(work),
    )
    (args.out / "deploy-summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print_table(summary)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
