"""Durations written the way Kubernetes users write them: "30s", "5m", "1h30m", "500ms" (or "0")."""

from __future__ import annotations

import re

DURATION_PATTERN = r"^(0|([0-9]+(\.[0-9]+)?(ms|s|m|h))+)$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(text: str) -> float:
    """The duration in seconds; ValueError naming the accepted forms for anything else."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration: write e.g. 30s, 5m, 1h30m, 500ms or 0")
    return sum(float(n) * _UNIT_S[unit] for n, unit in _PART.findall(text))
