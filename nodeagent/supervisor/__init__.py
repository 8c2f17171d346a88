"""Starts, health-checks, restarts (with backoff) and stops the engine processes of one node."""
