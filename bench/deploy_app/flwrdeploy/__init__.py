"""Flower app of Pollen's deployment benchmark (SuperLink + SuperNodes path)."""
