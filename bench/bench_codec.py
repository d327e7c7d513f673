"""Tensor encoding benchmark: Pollen against the incumbent (flwr 1.42), side by side.

    .venv/bin/python bench/bench_codec.py [--sizes 1000000,10000000,50000000] [--reps 7]

Models are N float32 parameters in 10 arrays. Every (implementation, family, size) runs in
its own fresh process, alternating between the two implementations, so allocator state and
machine noise hit both alike. flwr is installed by this script into its own virtual
environment (bench/.venv-flwr, `flwr==1.42.0`); it is never a dependency of the project.

Writes every measurement to bench/results/codec.jsonl and the comparison (medians and
ratios, flwr time / Pollen time) to bench/results/codec-summary.json, and prints a table.
The targets of the protocol issue:
  raw decode >= 5x flwr parameters_to_ndarrays; encode >= 2x flwr ndarrays_to_parameters;
  content-addressed chunked path >= 3x flwr's object path.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FLWR_SPEC = "flwr==1.42.0"
# (label, pollen family, flwr family, target speed-up or None for information only)
COMPARISONS = [
    ("payload (raw codec vs Parameters)", "codec", "legacy", {"encode": 2.0, "decode": 5.0}),
    ("serialized message", "message", "message", None),
    ("content-addressed chunks vs objects", "blob", "objects", {"roundtrip": 3.0}),
]
MB = 1_000_000


def ensure_flwr(env_dir: Path) -> Path:
    python = env_dir / "bin" / "python"
    probe = [str(python), "-c", f"import flwr; assert flwr.__version__ == '{FLWR_SPEC[6:]}'"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python
    print(f"installing {FLWR_SPEC} into {env_dir} (one time) ...", file=sys.stderr, flush=True)
    venv.create(env_dir, with_pip=True, clear=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", FLWR_SPEC, "numpy"]
    subprocess.run(pip, check=True, timeout=1800)
    return python


def run(python: Path, script: str, family: str, params: int, reps: int) -> list[dict[str, Any]]:
    cmd = [str(python), str(HERE / script), "--family", family, "--params", str(params)]
    cmd += ["--reps", str(reps)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def median(rows: list[dict[str, Any]], impl: str, family: str, op: str, params: int) -> float:
    for row in rows:
        if (row["impl"], row["family"], row["op"], row["params"]) == (impl, family, op, params):
            return float(row["median_s"])
    raise KeyError((impl, family, op, params))


def summarize(rows: list[dict[str, Any]], sizes: list[int]) -> list[dict[str, Any]]:
    summary = []
    for params in sizes:
        for label, ours, theirs, targets in COMPARISONS:
            times = {
                op: (
                    median(rows, "pollen", ours, op, params),
                    median(rows, "flwr", theirs, op, params),
                )
                for op in ("encode", "decode")
            }
            times["roundtrip"] = (
                times["encode"][0] + times["decode"][0],
                times["encode"][1] + times["decode"][1],
            )
            for op, (pollen_s, flwr_s) in times.items():
                target = (targets or {}).get(op)
                summary.append({
                    "params": params, "comparison": label, "op": op,
                    "pollen_ms": round(pollen_s * 1e3, 3), "flwr_ms": round(flwr_s * 1e3, 3),
                    "pollen_mb_s": round(4 * params / MB / pollen_s),
                    "flwr_mb_s": round(4 * params / MB / flwr_s),
                    "speedup": round(flwr_s / pollen_s, 2), "target": target,
                    "meets_target": None if target is None else flwr_s / pollen_s >= target,
                })  # fmt: skip
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,10000000,50000000")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--flwr-venv", type=Path, default=HERE / ".venv-flwr")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    flwr_python = ensure_flwr(args.flwr_venv)
    rows: list[dict[str, Any]] = []
    for params in sizes:
        for _, ours, theirs, _ in COMPARISONS:
            print(
                f"{params:>11,} params: pollen/{ours}, flwr/{theirs}", file=sys.stderr, flush=True
            )
            rows += run(Path(sys.executable), "_pollen_codec.py", ours, params, args.reps)
            rows += run(flwr_python, "_flwr_codec.py", theirs, params, args.reps)
    summary = summarize(rows, sizes)
    transport = [
        {"params": r["params"], "op": r["op"], "pollen_ms": round(r["median_s"] * 1e3, 3)}
        for r in rows
        if r["impl"] == "pollen" and r["op"] in ("frame", "parse")
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "codec.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = {"comparisons": summary, "pollen_chunk_transport": transport}
    (args.out / "codec-summary.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"{'params':>11} {'comparison':<38} {'op':<9} {'pollen ms':>10} {'flwr ms':>10} "
          f"{'speedup':>8}  target")  # fmt: skip
    for s in summary:
        verdict = (
            ""
            if s["target"] is None
            else (f">= {s['target']}x {'met' if s['meets_target'] else 'MISSED'}")
        )
        print(f"{s['params']:>11,} {s['comparison']:<38} {s['op']:<9} {s['pollen_ms']:>10.3f} "
              f"{s['flwr_ms']:>10.3f} {s['speedup']:>7.2f}x  {verdict}")  # fmt: skip
    for t in transport:
        print(f"{t['params']:>11,} pollen chunk transport, per transfer: {t['op']:<6} "
              f"{t['pollen_ms']:>9.3f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
