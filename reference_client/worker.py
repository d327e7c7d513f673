"""Runs the application's calls on a worker thread, one at a time.

The session thread keeps the protocol going (heartbeats, stop requests, deadlines) while
the application trains. Python cannot interrupt a running function, so a task that is
abandoned runs on until it returns and its reply is discarded; calls are serialized, so
the next task's call starts only then.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future

from pollen.dispatch import app_failure
from pollen.messages import Reply


class AppWorker:
    """Starts application calls on daemon threads, never two at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], Reply], *, method: str) -> Future[Reply]:
        """Run `job` once no earlier call runs; the future never holds an exception."""
        future: Future[Reply] = Future()

        def target() -> None:
            with self._lock:
                if not future.set_running_or_notify_cancel():
                    return
                try:
                    reply = job()
                except BaseException as exc:  # a worker's crash is the app's failure
                    reply = app_failure(exc, method)
                future.set_result(reply)

        # A daemon thread: an abandoned call must not keep the process alive at exit.
        threading.Thread(target=target, name=f"pollen-app-{method}", daemon=True).start()
        return future
