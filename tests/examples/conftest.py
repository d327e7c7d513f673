"""Real server and client processes, as in the integration tests."""

from tests.integration.conftest import procs

__all__ = ["procs"]
