"""The server's TOML configuration: typed sections with defaults, help and clear errors.

Every option is a field of a frozen dataclass with its help text in the field's metadata;
`pollen server --help` prints them all from here, and a bad value is reported with the
file, the section, the key, what was expected and what was given.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from reference_server.engine import PhasePlan, QuorumPolicy, RunPlan
from reference_server.validation import ValidationConfig


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


def _help(text: str, default: Any = MISSING) -> Any:
    if default is MISSING:
        return field(metadata={"help": text})
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True, kw_only=True)
class ServerSection:
    """[server]: how the server listens, where it keeps state, transport limits."""

    address: str = _help("host:port to listen on; port 0 picks a free port", "127.0.0.1:8443")
    state_dir: str = _help("directory of the durable state (SQLite + blobs)", "pollen-state")
    insecure: bool = _help("serve plaintext without TLS (logged as a warning)", False)
    tls_cert: str = _help("PEM certificate chain of the server (required unless insecure)", "")
    tls_key: str = _help("PEM private key of the server (required unless insecure)", "")
    client_ca: str = _help("PEM CA bundle; when set, clients must present a certificate", "")
    bind_node_ids: bool = _help(
        "with client_ca: a node's certificate must name its node_id (subject alternative name "
        "URI urn:pollen:node:NODE_ID or DNS NODE_ID), and a session's calls come from it",
        False,
    )
    max_message_bytes: int = _help(
        "largest message of a session; larger payloads travel as chunked blobs",
        2 * 1024 * 1024,
    )
    chunk_size_bytes: int = _help(
        "blob chunk size; memory in flight grows with clients x chunk", 1024 * 1024
    )
    inline_limit_bytes: int = _help("tensors larger than this are sent as blobs", 64 * 1024)
    heartbeat_interval_s: float = _help("interval at which working clients report liveness", 15.0)
    session_timeout_s: float = _help("silence after which a client is dropped", 60.0)
    max_poll_wait_s: float = _help("longest hold of a long poll", 30.0)
    keepalive_time_s: float = _help("HTTP/2 keepalive ping interval of the server", 60.0)
    shutdown_grace_s: float = _help("time in-flight calls get to finish on SIGTERM", 10.0)

    def check(self) -> None:
        _positive(self, "max_message_bytes", "chunk_size_bytes", "heartbeat_interval_s")
        _positive(self, "session_timeout_s", "max_poll_wait_s", "keepalive_time_s")
        if self.max_message_bytes < 64 * 1024:
            raise ConfigError("max_message_bytes: must be at least 65536")
        if self.chunk_size_bytes + 1024 > self.max_message_bytes:
            raise ConfigError("chunk_size_bytes: must leave 1024 bytes under max_message_bytes")
        if self.session_timeout_s <= self.heartbeat_interval_s:
            raise ConfigError("session_timeout_s: must exceed heartbeat_interval_s")
        if self.address.rpartition(":")[0] == "" or not self.address.rpartition(":")[2].isdigit():
            raise ConfigError(f"address: expected host:port, got {self.address!r}")
        if self.bind_node_ids and (self.insecure or not self.client_ca):
            raise ConfigError("bind_node_ids: needs TLS with client_ca (client certificates)")
        if not self.insecure and not (self.tls_cert and self.tls_key):
            raise ConfigError(
                "tls_cert and tls_key are required; set insecure = true to serve plaintext"
            )


@dataclass(frozen=True, kw_only=True)
class RunSection:
    """[run]: the job this server runs."""

    id: str = _help("run id; a restarted server resumes the run with this id", "run")
    kind: str = _help('"train" (fit rounds) or "analytics" (query rounds)', "train")
    rounds: int = _help("number of rounds", 3)
    seed: int = _help("seed of client sampling", 0)
    min_available_clients: int = _help("connected clients needed before a phase starts", 2)
    start_timeout_s: float = _help("how long a phase waits for enough clients", 300.0)
    on_quorum_missed: str = _help('"fail" the run or "retry" the phase', "fail")
    max_attempts: int = _help("attempts of a phase (and of its start) before failing", 3)
    initial_model: str = _help(".npz file of the initial model; empty asks one client", "")
    central_evaluation: str = _help('"module:function(round, arrays) -> (loss, metrics)"', "")

    def check(self) -> None:
        if self.kind not in ("train", "analytics"):
            raise ConfigError(f'kind: expected "train" or "analytics", got {self.kind!r}')
        if self.on_quorum_missed not in ("fail", "retry"):
            raise ConfigError(
                f'on_quorum_missed: expected "fail" or "retry", got {self.on_quorum_missed!r}'
            )
        _positive(self, "rounds", "min_available_clients", "start_timeout_s", "max_attempts")
        if not self.id or len(self.id) > 64 or not all(c.isalnum() or c in "._-" for c in self.id):
            raise ConfigError("id: 1 to 64 letters, digits, '.', '_' or '-'")


@dataclass(frozen=True, kw_only=True)
class PhaseSection:
    """[fit], [evaluate] and [query]: sampling, quorum and deadline of a phase."""

    fraction: float = _help("fraction of connected clients sampled", 1.0)
    min_clients: int = _help("fewest clients sampled", 2)
    min_results: int = _help("fewest accepted results to aggregate (the quorum)", 1)
    timeout_s: float = _help(
        "deadline of the phase; tasks get it less a 5 s grace for network delay", 600.0
    )
    config: dict[str, Any] = _help("config values sent with every instruction", {})

    def check(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"fraction: must be in (0, 1], got {self.fraction}")
        _positive(self, "min_clients", "min_results", "timeout_s")
        if self.min_results > self.min_clients:
            raise ConfigError("min_results: cannot exceed min_clients")

    def plan(self) -> PhasePlan:
        return PhasePlan(
            fraction=self.fraction,
            min_clients=self.min_clients,
            min_results=self.min_results,
            timeout_s=self.timeout_s,
            config=dict(self.config),
        )


@dataclass(frozen=True, kw_only=True)
class QuerySection(PhaseSection):
    """[query]: the analytics phase, plus how answers are reduced."""

    reduce: dict[str, str] = _help(
        'metric -> "sum" | "weighted_mean" | "min" | "max" (others are dropped)', {}
    )
    tensors: str = _help(
        'reduction of answer tensors: "sum" (histogram merge), "min" or "max"', "sum"
    )
    shapes: list[list[int]] = _help(
        "shapes every answer's tensors must have, in order, e.g. [[10]]; [] checks none", []
    )

    def check(self) -> None:
        super().check()
        if any(d < 0 for shape in self.shapes for d in shape):
            raise ConfigError(f"shapes: dimensions must be >= 0, got {self.shapes}")
        for key, how in self.reduce.items():
            if how not in ("sum", "weighted_mean", "min", "max"):
                raise ConfigError(f"reduce.{key}: unknown reducer {how!r}")
        if self.tensors not in ("sum", "min", "max"):
            raise ConfigError(f"tensors: unknown reducer {self.tensors!r}")


@dataclass(frozen=True, kw_only=True)
class ValidationSection:
    """[validation]: limits on every update (shape, dtype and finiteness are always checked)."""

    max_num_examples: int = _help("largest num_examples a client may claim", 1_000_000_000)
    max_update_norm: float = _help("largest L2 norm of update - global model; 0 disables", 0.0)

    def check(self) -> None:
        _positive(self, "max_num_examples")
        if self.max_update_norm < 0:
            raise ConfigError("max_update_norm: must be >= 0")

    def config(self, query: QuerySection | None = None) -> ValidationConfig:
        return ValidationConfig(
            max_num_examples=self.max_num_examples,
            max_update_norm=self.max_update_norm or None,
            query_shapes=tuple(tuple(s) for s in query.shapes) if query and query.shapes else None,
        )


@dataclass(frozen=True, kw_only=True)
class Config:
    """The whole server configuration."""

    server: ServerSection = field(default_factory=ServerSection)
    run: RunSection = field(default_factory=RunSection)
    fit: PhaseSection = field(default_factory=PhaseSection)
    evaluate: PhaseSection | None = None
    query: QuerySection = field(default_factory=QuerySection)
    strategy: dict[str, Any] = field(default_factory=lambda: {"name": "fedavg"})
    validation: ValidationSection = field(default_factory=ValidationSection)
    #: sha256 of the file, stored with the run: resuming under another config is refused.
    digest: str = ""

    def plan(self) -> RunPlan:
        return RunPlan(
            run_id=self.run.id,
            rounds=self.run.rounds,
            seed=self.run.seed,
            analytics=self.run.kind == "analytics",
            fit=self.fit.plan(),
            evaluate=self.evaluate.plan() if self.evaluate else None,
            query=self.query.plan(),
            min_available_clients=self.run.min_available_clients,
            start_timeout_s=self.run.start_timeout_s,
            on_quorum_missed=QuorumPolicy(self.run.on_quorum_missed),
            max_attempts=self.run.max_attempts,
        )


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerSection,
    "run": RunSection,
    "fit": PhaseSection,
    "evaluate": PhaseSection,
    "query": QuerySection,
    "validation": ValidationSection,
}


def _positive(section: object, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
            raise ConfigError(f"{name}: must be > 0, got {value}")


def _accepts(annotation: Any, value: object) -> bool:
    origin = typing.get_origin(annotation) or annotation
    if origin is bool:
        return isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin is str:
        return isinstance(value, str)
    if origin is dict:
        return isinstance(value, dict)
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_accepts(item, v) for v in value)
    return False


def _section(cls: type[Any], raw: object, name: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    types_ = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(
            f"[{name}] unknown key(s) {unknown}; valid keys: {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for key, value in raw.items():
        expected = types_[key]
        if not _accepts(expected, value):
            raise ConfigError(
                f"[{name}] {key}: expected "
                f"{expected.__name__ if isinstance(expected, type) else expected}, "
                f"got {type(value).__name__} {value!r}"
            )
        values[key] = float(value) if expected is float else value
    section = cls(**values)
    try:
        section.check()
    except ConfigError as exc:
        raise ConfigError(f"[{name}] {exc}") from None
    return section


def parse_config(
    text: str,
    *,
    source: str = "<config>",
    overrides: Mapping[str, Mapping[str, object]] | None = None,
) -> Config:
    """Parse and check a configuration; every problem is a ConfigError naming its place.

    `overrides` (section -> key -> value, from command-line flags) replace file values
    before anything is checked.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    for section, values in (overrides or {}).items():
        raw[section] = {**raw.get(section, {}), **values}
    known = set(_SECTIONS) | {"strategy"}
    unknown = sorted(set(raw) - known)
    try:
        if unknown:
            raise ConfigError(f"unknown section(s) {unknown}; valid: {', '.join(sorted(known))}")
        # Absent sections are checked too: their defaults must hold (TLS files, say).
        sections = {
            name: _section(cls, raw.get(name, {}), name)
            for name, cls in _SECTIONS.items()
            if name in raw or name != "evaluate"
        }
        strategy = raw.get("strategy", {"name": "fedavg"})
        if not isinstance(strategy, dict) or not isinstance(strategy.get("name", "fedavg"), str):
            raise ConfigError("[strategy] must be a table with a string name")
        config = Config(
            **sections,
            strategy={"name": "fedavg", **strategy},
            digest=hashlib.sha256(text.encode()).hexdigest(),
        )
        if config.run.kind == "analytics" and "query" not in raw:
            raise ConfigError('[query] is required when [run] kind = "analytics"')
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def load_config(
    path: Path, *, overrides: Mapping[str, Mapping[str, object]] | None = None
) -> Config:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return parse_config(text, source=str(path), overrides=overrides)


def describe_options() -> str:
    """Every configuration key with its default and help, for `pollen server --help`."""
    lines = []
    for name, cls in [*_SECTIONS.items()]:
        if name == "evaluate":
            lines.append("[evaluate]  optional, same keys as [fit]; enables federated evaluation")
            continue
        lines.append(f"[{name}]  {(cls.__doc__ or '').strip().split(': ', 1)[-1]}")
        instance = cls()
        for f in fields(cls):
            setting = f"{f.name} = {getattr(instance, f.name)!r}"
            lines.append(f"  {setting:<34} {f.metadata.get('help', '')}")
    lines.append('[strategy]  name = "fedavg" and the strategy\'s own parameters')
    return "\n".join(lines)


__all__ = ["Config", "ConfigError", "describe_options", "load_config", "parse_config"]
