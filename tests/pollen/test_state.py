import itertools
import json
from pathlib import Path

import pytest
import yaml

from pollen.state import (
    CLIENT_SESSION,
    MACHINES,
    SERVER_ROUND,
    TASK,
    InvalidTransition,
    MachineSpec,
    StateInfo,
    StateMachine,
    load_machines,
)

ROOT = Path(__file__).resolve().parents[2]
ALL_PAIRS = [
    (name, state, event)
    for name, spec in MACHINES.items()
    for state, event in itertools.product(spec.states, spec.events)
]


def test_the_core_loads_exactly_the_spec_table() -> None:
    spec_data = yaml.safe_load((ROOT / "spec" / "state_machines.yaml").read_text())
    generated = json.loads((ROOT / "pollen" / "_generated" / "state_machines.json").read_text())
    assert generated == spec_data
    assert set(MACHINES) == {"client_session", "server_round", "task"}


@pytest.mark.parametrize(("machine", "state", "event"), ALL_PAIRS)
def test_every_state_event_pair(machine: str, state: str, event: str) -> None:
    spec = MACHINES[machine]
    expected = spec.transitions[state].get(event)
    instance = StateMachine(spec, state)
    if expected is None:
        with pytest.raises(InvalidTransition) as info:
            instance.handle(event)
        assert (info.value.machine, info.value.state, info.value.event) == (machine, state, event)
        assert instance.state == state, "a refused event must not change the state"
    else:
        assert instance.handle(event) == expected
        assert instance.state == expected


def test_sweep_covers_the_whole_product() -> None:
    for spec in MACHINES.values():
        pairs = list(spec.pairs())
        assert len(pairs) == len(spec.states) * len(spec.events)
        listed = sum(len(row) for row in spec.transitions.values())
        assert sum(1 for *_, target in pairs if target is not None) == listed


@pytest.mark.parametrize("spec", list(MACHINES.values()), ids=list(MACHINES))
def test_every_state_can_still_end(spec: MachineSpec) -> None:
    terminal = {name for name, info in spec.states.items() if info.terminal}
    assert terminal, "every machine needs a terminal state"
    for state in spec.states:
        assert spec.reachable(state) & terminal, f"{spec.name}: {state!r} can never end"


def test_terminal_task_states_say_how_a_resubmission_is_answered() -> None:
    for name, info in TASK.states.items():
        if info.terminal:
            assert info.submit_reply is not None, name
    assert TASK.states["completed"].submit_reply == "OK"
    assert TASK.states["cancelled"].submit_reply == "STALE_ROUND"


def test_happy_paths() -> None:
    client = StateMachine(CLIENT_SESSION)
    for event in [
        "connect", "handshake_accepted", "poll_started", "task_received", "heartbeat_sent",
        "work_finished", "result_accepted", "poll_started", "shutdown_received",
        "leave_done_stop",
    ]:  # fmt: skip
        client.handle(event)
    assert client.state == "closed"
    assert client.terminal

    server = StateMachine(SERVER_ROUND)
    for event in ["clients_ready", "result_accepted", "collection_complete", "round_aggregated"]:
        server.handle(event)
    assert server.handle("run_committed") == "finished"


def _tiny(**overrides: object) -> dict[str, object]:
    machine: dict[str, object] = {
        "title": "t",
        "description": "d",
        "initial": "a",
        "states": {"a": {"description": "A"}, "b": {"description": "B", "terminal": True}},
        "events": {"go": "Go."},
        "transitions": {"a": {"go": "b"}, "b": {}},
    }
    machine.update(overrides)
    return {"version": 1, "machines": {"tiny": machine}}


def test_a_valid_tiny_table_loads() -> None:
    tiny = load_machines(json.dumps(_tiny()))["tiny"]
    assert tiny.next_state("a", "go") == "b"


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"transitions": {"a": {"go": "zz"}, "b": {}}}, "unknown state 'zz'"),
        ({"transitions": {"a": {"jump": "b"}, "b": {}}}, "undeclared event 'jump'"),
        ({"events": {"go": "Go.", "idle": "Never used."}}, "events never used"),
        (
            {"transitions": {"a": {"go": "b"}, "b": {"go": "a"}}},
            "terminal state 'b' has transitions",
        ),
        ({"initial": "nope"}, "initial state 'nope'"),
        (
            {
                "states": {
                    "a": {"description": "A"},
                    "b": {"description": "B", "terminal": True},
                    "c": {"description": "C"},
                },
                "transitions": {"a": {"go": "b"}, "b": {}, "c": {"go": "b"}},
            },
            "unreachable",
        ),
    ],
)
def test_inconsistent_tables_are_refused(overrides: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        load_machines(json.dumps(_tiny(**overrides)))


def test_unknown_names_are_programming_errors_not_transitions() -> None:
    with pytest.raises(ValueError, match="unknown event"):
        TASK.next_state("created", "teleport")
    with pytest.raises(ValueError, match="unknown state"):
        StateMachine(TASK, "limbo")
    assert StateInfo(name="x", description="y").terminal is False
