"""Client app of the deployment benchmark (`bench_deploy.py`), run by the reference client.

    python -m reference_client --app bench/_deploy_app.py:BenchClient --server H:P --insecure

No training: `fit` returns the received parameters + 0.01 and claims one example, exactly
what the incumbent's benchmark clients do, so both sides move and compute the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import pollen
from pollen.values import Config


class BenchClient(pollen.Client):
    """Returns parameters + 0.01 (float32), num_examples 1."""

    def fit(self, parameters: Sequence[np.ndarray], config: Config) -> pollen.FitResult:
        return pollen.FitResult(
            parameters=[p + np.float32(0.01) for p in parameters], num_examples=1
        )
