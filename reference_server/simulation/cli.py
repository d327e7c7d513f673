"""`pollen simulate`: a federated training of virtual clients, on one machine or Ray.

With no option it runs the demo: scikit-learn's digits over 100 clients (Dirichlet label
skew, alpha 0.5), numpy softmax regression, FedAvg, 30 rounds; one line per round and
`runs/<run-id>/history.json` plus `accuracy.png` at the end.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pollen.errors import PollenError
from pollen.values import ConfigValue
from reference_server.simulation.executors import (
    Executor,
    InProcessExecutor,
    RayExecutor,
    RayOptions,
)
from reference_server.simulation.runner import (
    AppContext,
    RoundReport,
    Simulation,
    SimulationApp,
    SimulationConfig,
    SimulationResult,
)
from reference_server.strategies.registry import STRATEGIES, make_strategy

DEFAULT_APP = "reference_server.simulation.demo:digits"
ENGINES = ("in-process", "ray")

EPILOG = f"""\
config file (TOML; command-line options win over it):
  [simulation]            clients, rounds, strategy, engine, fraction, evaluate_fraction,
                          seed, output, run_id, app (the same names as the options)
  [strategy]              name = "fedadam" and the strategy's parameters (eta = 0.01, ...)
  [fit] / [evaluate]      config values sent with every fit / evaluate instruction
  [app]                   options of the app builder (the demo: partitioner, alpha)
  [ray]                   address, num_cpus, num_gpus (per client), batch_size

an app is MODULE:FUNCTION (or FILE.py:FUNCTION) taking an AppContext (clients, seed,
options) and returning a SimulationApp (client_factory: index -> pollen.Client,
initial_parameters, central_evaluation); the default is {DEFAULT_APP}.

strategies: {", ".join(STRATEGIES)}

example:
  pollen simulate --clients 1000 --fraction 0.1 --rounds 50 --strategy fedadam
  pollen simulate --config sim.toml --engine ray --ray-address auto
"""


@dataclass(frozen=True, kw_only=True)
class Options:
    """The merged settings of one `pollen simulate` run."""

    app: str
    clients: int
    rounds: int
    strategy: dict[str, Any]
    engine: str
    fraction: float
    evaluate_fraction: float
    seed: int
    output: Path
    run_id: str
    fit_config: dict[str, ConfigValue]
    evaluate_config: dict[str, ConfigValue]
    app_options: dict[str, ConfigValue]
    ray: RayOptions
    progress: bool


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Simulate a federated training with virtual clients: the same round "
        "engine and strategies as `pollen server`, no network. Defaults run the digits demo.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    add = parser.add_argument
    add("--config", type=Path, help="TOML file with the settings below (options override it)")
    add("--clients", type=int, help="number of virtual clients (default 100)")
    add("--rounds", type=int, help="number of rounds (default 30)")
    add("--strategy", help="aggregation strategy by name (default fedavg)")
    add("--engine", choices=ENGINES, help="where clients run: in-process (default) or ray")
    add("--fraction", type=float, help="fraction of clients sampled per round (default 1.0)")
    add(
        "--evaluate-fraction",
        type=float,
        help="fraction sampled for federated evaluation each round; 0 (default) turns it off",
    )
    add("--seed", type=int, help="seed of sampling, partitioning and the demo's training (0)")
    add("--output", type=Path, help="folder of run folders (default runs/)")
    add("--run-id", help="name of this run's folder (default: date, time and strategy)")
    add("--app", help=f"MODULE:FUNCTION building the app (default {DEFAULT_APP})")
    add("--ray-address", help="Ray cluster to join (auto, ray://host:10001); default: local")
    add("--num-cpus", type=float, help="CPUs one client reserves on Ray (default 1)")
    add("--num-gpus", type=float, help="GPUs one client reserves on Ray (default 0)")
    add("--no-progress", action="store_true", help="no progress bar")
    add("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def _table(raw: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ValueError(f"[{name}] must be a table")
    return dict(value)


_SIMULATION_KEYS = {
    "clients": int,
    "rounds": int,
    "strategy": str,
    "engine": str,
    "fraction": float,
    "evaluate_fraction": float,
    "seed": int,
    "output": str,
    "run_id": str,
    "app": str,
}


def merge(args: argparse.Namespace) -> Options:
    """Defaults, then the config file, then the command line."""
    raw: dict[str, Any] = {}
    if args.config is not None:
        raw = tomllib.loads(args.config.read_text())
        unknown = sorted(set(raw) - {"simulation", "strategy", "fit", "evaluate", "app", "ray"})
        if unknown:
            raise ValueError(f"{args.config}: unknown section(s) {unknown}")
    sim = _table(raw, "simulation")
    for key, given in sim.items():
        kind = _SIMULATION_KEYS.get(key)
        if kind is None:
            raise ValueError(f"[simulation] unknown key {key!r}; valid: {sorted(_SIMULATION_KEYS)}")
        value = float(given) if kind is float and isinstance(given, int) else given
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"[simulation] {key}: expected {kind.__name__}, got {given!r}")
        sim[key] = value
    for key in _SIMULATION_KEYS:
        flag = getattr(args, key, None)
        if flag is not None:
            sim[key] = flag
    strategy = {"name": "fedavg", **_table(raw, "strategy")}
    if args.strategy is not None:
        strategy = {"name": args.strategy}
    elif "strategy" in sim:
        strategy["name"] = sim["strategy"]
    ray = _table(raw, "ray")
    unknown_ray = sorted(set(ray) - {"address", "num_cpus", "num_gpus", "batch_size"})
    if unknown_ray:
        raise ValueError(f"[ray] unknown key(s) {unknown_ray}")
    for key, flag in (("address", args.ray_address), ("num_cpus", args.num_cpus)):
        if flag is not None:
            ray[key] = flag
    if args.num_gpus is not None:
        ray["num_gpus"] = args.num_gpus
    engine = sim.get("engine", "in-process")
    if engine not in ENGINES:
        raise ValueError(f"engine: expected one of {ENGINES}, got {engine!r}")
    name = str(strategy["name"])
    return Options(
        app=sim.get("app", DEFAULT_APP),
        clients=sim.get("clients", 100),
        rounds=sim.get("rounds", 30),
        strategy=strategy,
        engine=engine,
        fraction=sim.get("fraction", 1.0),
        evaluate_fraction=sim.get("evaluate_fraction", 0.0),
        seed=sim.get("seed", 0),
        output=Path(sim.get("output", "runs")),
        run_id=sim.get("run_id") or f"{time.strftime('%Y%m%d-%H%M%S')}-{name}",
        fit_config=_table(raw, "fit"),
        evaluate_config=_table(raw, "evaluate"),
        app_options=_table(raw, "app"),
        ray=RayOptions(
            address=ray.get("address"),
            num_cpus=float(ray.get("num_cpus", 1.0)),
            num_gpus=float(ray.get("num_gpus", 0.0)),
            batch_size=int(ray.get("batch_size", 0)),
        ),
        progress=not args.no_progress,
    )


def load_builder(reference: str) -> Callable[[AppContext], SimulationApp]:
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"app: expected MODULE:FUNCTION or FILE.py:FUNCTION, got {reference!r}")
    module: Any
    if module_name.endswith(".py"):
        path = Path(module_name).resolve()
        if not path.is_file():
            raise ValueError(f"app: no such file {module_name}")
        # The file's folder is importable, so that the app can import its neighbours.
        sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(f"pollen_sim_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ValueError(f"app: cannot load {module_name}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:
        if "" not in sys.path:
            sys.path.insert(0, "")
        module = importlib.import_module(module_name)
    builder = getattr(module, attribute, None)
    if not callable(builder):
        raise ValueError(f"app: {reference} is not a function")
    return builder  # type: ignore[no-any-return]


def _metric(metrics: Mapping[str, ConfigValue], *names: str) -> float | None:
    for name in names:
        value = metrics.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def round_line(report: RoundReport, rounds: int) -> str:
    """`round 3/30  loss 0.4123  accuracy 0.9167  (12/100 clients, 0.03 s)`."""
    metrics = report.metrics
    loss = _metric(metrics, "central_loss", "eval_loss", "fit_train_loss")
    accuracy = _metric(metrics, "central_accuracy", "eval_accuracy", "fit_train_accuracy")
    parts = [f"round {report.round:>{len(str(rounds))}}/{rounds}"]
    parts.append(f"loss {loss:.4f}" if loss is not None else "loss -")
    parts.append(f"accuracy {accuracy:.4f}" if accuracy is not None else "accuracy -")
    fit = report.phases.get("fit_attempt_1", {})
    failures = sum(fit.get("failures", {}).values())
    detail = f"{fit.get('accepted', 0)} updates"
    if failures:
        detail += f", {failures} failed"
    parts.append(f"({detail}, {report.duration_s:.2f} s)")
    return "  ".join(parts)


def write_outputs(folder: Path, options: Options, result: SimulationResult) -> list[Path]:
    """history.json always; accuracy.png when matplotlib is installed."""
    folder.mkdir(parents=True, exist_ok=True)
    history = {
        "run_id": options.run_id,
        "status": result.status,
        "reason": result.reason,
        "settings": {
            "app": options.app,
            "clients": options.clients,
            "rounds": options.rounds,
            "strategy": options.strategy,
            "engine": result.executor,
            "fraction": options.fraction,
            "evaluate_fraction": options.evaluate_fraction,
            "seed": options.seed,
            "fit_config": options.fit_config,
            "app_options": options.app_options,
        },
        "wall_s": round(result.wall_s, 3),
        "peak_rss_bytes": result.peak_rss_bytes,
        "rounds": [r.to_json() for r in result.rounds],
    }
    written = [folder / "history.json"]
    written[0].write_text(json.dumps(history, indent=1) + "\n")
    plot = _plot(folder / "accuracy.png", result.rounds)
    if plot is not None:
        written.append(plot)
    return written


def _plot(path: Path, rounds: Sequence[RoundReport]) -> Path | None:
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return None
    series = {
        label: [(r.round, _metric(r.metrics, key)) for r in rounds]
        for label, key in (
            ("central (test set)", "central_accuracy"),
            ("federated evaluation", "eval_accuracy"),
            ("clients' training data", "fit_train_accuracy"),
        )
    }
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    for label, points in series.items():
        shown = [(x, y) for x, y in points if y is not None]
        if shown:
            axes.plot(*zip(*shown, strict=True), marker=".", label=label)
    axes.set_xlabel("round")
    axes.set_ylabel("accuracy")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


class _Progress:
    """A tqdm bar over rounds when tqdm is installed and wanted; plain lines otherwise."""

    def __init__(self, total: int, *, enabled: bool, stream: TextIO) -> None:
        self.stream = stream
        self.bar: Any = None
        if enabled:
            try:
                from tqdm import tqdm  # noqa: PLC0415
            except ImportError:
                return
            self.bar = tqdm(total=total, unit="round", file=sys.stderr, leave=False)

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
            self.bar.update(1)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(options: Options, *, stream: TextIO | None = None) -> SimulationResult:
    stream = stream or sys.stdout
    builder = load_builder(options.app)
    app = builder(
        AppContext(clients=options.clients, seed=options.seed, options=options.app_options)
    )
    strategy_params = {k: v for k, v in options.strategy.items() if k != "name"}
    strategy = make_strategy(str(options.strategy["name"]), strategy_params)
    config = SimulationConfig(
        clients=options.clients,
        rounds=options.rounds,
        fraction=options.fraction,
        evaluate_fraction=options.evaluate_fraction,
        seed=options.seed,
        run_id=options.run_id,
        fit_config=options.fit_config,
        evaluate_config=options.evaluate_config,
    )
    executor: Executor
    if options.engine == "ray":
        executor = RayExecutor(app.client_factory, options.ray)
    else:
        executor = InProcessExecutor(app.client_factory)
    print(
        f"simulating {options.clients} clients x {options.rounds} rounds, "
        f"{strategy.name}, {executor.name} engine, run {options.run_id}",
        file=stream,
        flush=True,
    )
    progress = _Progress(options.rounds, enabled=options.progress, stream=stream)
    try:
        result = Simulation(
            app,
            config,
            strategy=strategy,
            executor=executor,
            on_round=lambda report: progress.line(round_line(report, options.rounds)),
        ).run()
    finally:
        progress.close()
        executor.close()
    written = write_outputs(options.output / options.run_id, options, result)
    final = result.rounds[-1].metrics if result.rounds else {}
    accuracy = _metric(final, "central_accuracy", "eval_accuracy")
    summary = [f"{result.status}: {len(result.rounds)} rounds in {result.wall_s:.1f} s"]
    if accuracy is not None:
        summary.append(f"final accuracy {accuracy:.4f}")
    summary.append(f"peak RSS {result.peak_rss_bytes / 1e6:.0f} MB")
    print(" | ".join(summary), file=stream)
    for path in written:
        print(f"wrote {path}", file=stream)
    if result.status != "finished":
        print(f"the run {result.status}: {result.reason}", file=stream)
    return result


def main(argv: Sequence[str] | None = None, *, prog: str = "pollen simulate") -> int:
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        options = merge(args)
        result = run(options)
    except (ValueError, RuntimeError, OSError, PollenError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0 if result.status == "finished" else 1


__all__ = ["Options", "build_parser", "main", "merge", "round_line", "run", "write_outputs"]
