"""Node identity: an explicit id, or one generated once and kept in a file."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from pollen.handshake import check_node_id

log = logging.getLogger(__name__)


def resolve_node_id(
    node_id: str | None = None, node_id_file: str | os.PathLike[str] | None = None
) -> str:
    """The node id to handshake with (the same for every handshake, PLN-HS-028).

    An explicit `node_id` wins. Otherwise `node_id_file` holds it: read when it exists,
    created with a new random id (uuid4) when it does not, so that a restarted client
    keeps its identity. With neither, the id lives as long as the process.
    """
    if node_id is not None and node_id_file is not None:
        raise ValueError("give node_id or node_id_file, not both")
    if node_id is not None:
        return check_node_id(node_id)
    if node_id_file is None:
        generated = str(uuid.uuid4())
        log.warning("no node id configured: using %s for this process only", generated)
        return generated
    path = Path(node_id_file)
    if path.exists():
        return check_node_id(path.read_text("utf-8").strip())
    generated = str(uuid.uuid4())
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed, so that a crash never leaves a half-written id.
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(generated + "\n", "utf-8")
    os.replace(partial, path)
    log.info("new node id %s saved to %s", generated, path)
    return generated
