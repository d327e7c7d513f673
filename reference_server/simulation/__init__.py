"""Simulation: thousands of virtual clients on the deployment's engine and strategies.

`simulate(app, config)` runs a federated training in one process (or on Ray) with no
network: the same round engine, validation and strategies as `pollen server`, driven by
clients that the app's factory builds only while they have a task. `pollen simulate` is
the command line of this package.
"""

from reference_server.simulation.executors import (
    ClientFactory,
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
    SimulationFailed,
    SimulationResult,
    simulate,
)

__all__ = [
    "AppContext",
    "ClientFactory",
    "Executor",
    "InProcessExecutor",
    "RayExecutor",
    "RayOptions",
    "RoundReport",
    "Simulation",
    "SimulationApp",
    "SimulationConfig",
    "SimulationFailed",
    "SimulationResult",
    "simulate",
]
