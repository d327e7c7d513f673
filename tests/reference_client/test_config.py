"""Client options: defaults and derived values."""

from reference_client import ClientOptions
from reference_client.config import AGENT


def test_the_agent_names_the_application_first_then_the_sdk() -> None:
    assert AGENT.startswith("pollen-python/")
    assert ClientOptions().agent_string == AGENT
    assert ClientOptions(agent="digits/1.2.0").agent_string == f"digits/1.2.0 {AGENT}"
