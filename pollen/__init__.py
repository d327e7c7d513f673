"""Pollen: the sans-IO protocol core (wire types, tensor codecs, state machines, errors)."""
