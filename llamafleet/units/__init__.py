"""Quantities as people write them: byte sizes (sizes.py) and durations (durations.py)."""
