"""Settings of the reference client beyond the server address and credentials."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata

from pollen.codecs import CODECS
from pollen.dtypes import Dtype
from pollen.handshake import RAW_CODEC
from pollen.limits import Limits


def _version() -> str:
    try:
        return metadata.version("pollen-fl")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare tree
        return "0.0.0"


AGENT = f"pollen-python/{_version()}"

#: Codecs this client decodes and encodes, most preferred first (PLN-HS-004). Lossless
#: first; the lossy ones are listed because the client decodes them, and a server applies
#: them only where a run's configuration asks (PLN-HS-019).
DEFAULT_CODECS = (RAW_CODEC, "zstd", "float16", "bfloat16", "int8", "topk")


@dataclass(frozen=True, kw_only=True)
class ClientOptions:
    """Protocol and transport settings; the defaults suit most deployments."""

    #: Receive limits declared in the handshake: they bound what the server sends.
    limits: Limits = field(default_factory=Limits)
    codecs: tuple[str, ...] = DEFAULT_CODECS
    dtypes: frozenset[Dtype] = field(default_factory=lambda: frozenset(Dtype))
    #: Codec for result tensors, where negotiated (a lossy one only if you mean it).
    result_codec: str = RAW_CODEC
    #: Your application's `name/version`, sent before the SDK's own token (03-handshake).
    agent: str = ""
    #: Deadlines (every RPC has one, PLN-TRN-014).
    handshake_timeout_s: float = 20.0
    call_timeout_s: float = 60.0
    #: A PollTask's deadline is its wait plus this (at least 5 s, PLN-TRN-016).
    poll_deadline_margin_s: float = 10.0
    #: Leave is best effort, sent once with a deadline of at most 5 s (PLN-SES-019).
    leave_timeout_s: float = 5.0
    #: Deadline of one DownloadBlob stream; a longer download resumes where it stopped.
    download_timeout_s: float = 600.0
    #: HTTP/2 keepalive pings: servers close connections that ping more often than
    #: they allow, 5 minutes by default (PLN-TRN-021).
    keepalive_time_ms: int = 300_000
    keepalive_timeout_ms: int = 20_000
    #: Downloads or uploads of one blob that end in a digest mismatch before giving up.
    blob_attempts: int = 3
    #: Results of recently answered tasks kept to answer a redelivery (PLN-TSK-015). A
    #: task is handed out again only around a lost acknowledgement, so the last answer is
    #: the one that can be asked for again; each kept result holds a whole update.
    kept_results: int = 1

    @property
    def agent_string(self) -> str:
        """The Handshake's agent: `app/version pollen-python/x.y.z`, most specific first."""
        return f"{self.agent} {AGENT}" if self.agent else AGENT

    def __post_init__(self) -> None:
        if RAW_CODEC not in self.codecs:
            raise ValueError("the raw codec is mandatory (PLN-HS-004)")
        unknown = [c for c in self.codecs if c not in CODECS]
        if unknown:
            raise ValueError(f"unknown codecs: {unknown}")
        if self.result_codec not in self.codecs or self.result_codec == "topk":
            raise ValueError(f"result_codec {self.result_codec!r} cannot be used for results")
        if self.leave_timeout_s > 5.0:
            raise ValueError("leave_timeout_s is at most 5 s (PLN-SES-019)")
        if self.poll_deadline_margin_s < 5.0:
            raise ValueError("poll_deadline_margin_s is at least 5 s (PLN-TRN-016)")
