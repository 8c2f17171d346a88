"""Placement: which node runs each replica. Pure functions over a state snapshot; no network I/O."""
