"""Pollen conformance suite: golden vectors, scenarios and the harness."""
