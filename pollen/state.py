"""The protocol's state machines, loaded from the spec's table.

spec/state_machines.yaml is the single source of every transition: the spec renders its
tables from it, and this module loads its generated JSON copy. No transition lives in
code, so the implementation cannot drift from the spec. A (state, event) pair the table
does not list is a protocol violation and raises InvalidTransition.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any

from pollen.errors import ErrorCode, PollenError


class InvalidTransition(PollenError):
    """An event arrived in a state whose row does not list it."""

    code = ErrorCode.INTERNAL

    def __init__(self, machine: str, state: str, event: str) -> None:
        super().__init__(f"{machine}: event {event!r} is not allowed in state {state!r}")
        self.machine = machine
        self.state = state
        self.event = event


@dataclass(frozen=True, kw_only=True)
class StateInfo:
    """One state of a machine."""

    name: str
    description: str
    terminal: bool = False
    #: For task states: how the server answers a SubmitResult in this state ("OK" or an
    #: error code name); None where the table gives nothing.
    submit_reply: str | None = None


@dataclass(frozen=True, kw_only=True)
class MachineSpec:
    """A validated state machine definition: states, events and transitions."""

    name: str
    title: str
    description: str
    initial: str
    states: Mapping[str, StateInfo]
    events: Mapping[str, str]
    transitions: Mapping[str, Mapping[str, str]] = field(repr=False)

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ValueError(f"state machine {self.name!r} is inconsistent: " + "; ".join(problems))

    def _problems(self) -> Iterator[str]:
        if self.initial not in self.states:
            yield f"initial state {self.initial!r} is not a state"
        if set(self.transitions) != set(self.states):
            yield f"rows {sorted(self.transitions)} differ from states {sorted(self.states)}"
        used = set()
        for state, row in self.transitions.items():
            if row and self.states.get(state, StateInfo(name=state, description="")).terminal:
                yield f"terminal state {state!r} has transitions"
            for event, target in row.items():
                used.add(event)
                if event not in self.events:
                    yield f"{state!r} uses undeclared event {event!r}"
                if target not in self.states:
                    yield f"{state!r} --{event}--> unknown state {target!r}"
        if unused := set(self.events) - used:
            yield f"events never used: {sorted(unused)}"
        unreachable = set(self.states) - self.reachable()
        if unreachable:
            yield f"states unreachable from {self.initial!r}: {sorted(unreachable)}"

    def reachable(self, start: str | None = None) -> set[str]:
        """States reachable from `start` (default: the initial state), itself included."""
        origin = self.initial if start is None else start
        seen = {origin}
        frontier = [origin]
        while frontier:
            for target in self.transitions.get(frontier.pop(), {}).values():
                if target not in seen:
                    seen.add(target)
                    frontier.append(target)
        return seen

    def next_state(self, state: str, event: str) -> str:
        """The state after `event` in `state`, or InvalidTransition."""
        if state not in self.states:
            raise ValueError(f"{self.name}: unknown state {state!r}")
        if event not in self.events:
            raise ValueError(f"{self.name}: unknown event {event!r}")
        try:
            return self.transitions[state][event]
        except KeyError:
            raise InvalidTransition(self.name, state, event) from None

    def allowed_events(self, state: str) -> frozenset[str]:
        return frozenset(self.transitions[state])

    def pairs(self) -> Iterator[tuple[str, str, str | None]]:
        """Every (state, event, next state or None when not allowed), in table order."""
        for state in self.states:
            for event in self.events:
                yield state, event, self.transitions[state].get(event)


class StateMachine:
    """A running instance of a machine: holds the current state and applies events."""

    def __init__(self, spec: MachineSpec, state: str | None = None) -> None:
        self.spec = spec
        self.state = spec.initial if state is None else state
        if self.state not in spec.states:
            raise ValueError(f"{spec.name}: unknown state {self.state!r}")

    @property
    def terminal(self) -> bool:
        return self.spec.states[self.state].terminal

    def can_handle(self, event: str) -> bool:
        return event in self.spec.transitions[self.state]

    def handle(self, event: str) -> str:
        """Apply `event`; the state is unchanged when the event is not allowed."""
        self.state = self.spec.next_state(self.state, event)
        return self.state

    def __repr__(self) -> str:
        return f"StateMachine({self.spec.name}, state={self.state!r})"


def _freeze(name: str, raw: dict[str, Any]) -> MachineSpec:
    states, transitions, events = raw["states"], raw["transitions"], raw["events"]
    return MachineSpec(
        name=name,
        title=str(raw["title"]),
        description=str(raw["description"]),
        initial=str(raw["initial"]),
        states=MappingProxyType(
            {
                state: StateInfo(
                    name=state,
                    description=info["description"],
                    terminal=bool(info.get("terminal", False)),
                    submit_reply=info.get("submit_reply"),
                )
                for state, info in states.items()
            }
        ),
        events=MappingProxyType(dict(events)),
        transitions=MappingProxyType(
            {state: MappingProxyType(dict(row or {})) for state, row in transitions.items()}
        ),
    )


def load_machines(text: str) -> Mapping[str, MachineSpec]:
    """Parse and validate the JSON form of spec/state_machines.yaml."""
    data = json.loads(text)
    return MappingProxyType({name: _freeze(name, raw) for name, raw in data["machines"].items()})


MACHINES = load_machines(
    resources.files("pollen._generated").joinpath("state_machines.json").read_text("utf-8")
)
CLIENT_SESSION = MACHINES["client_session"]
SERVER_ROUND = MACHINES["server_round"]
TASK = MACHINES["task"]
