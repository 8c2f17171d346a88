"""llama.cpp's log lines about its buffers → bytes per kind (model, kv, output, compute) and device.

llama.cpp reports every backend buffer it allocates while loading a model and creating a
context, e.g. ``load_tensors:   CPU_Mapped model buffer size =    92.10 MiB`` or
``sched_reserve:        CPU compute buffer size =   102.51 MiB``; values have two decimals
of MiB, so each is exact to ±5 KiB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LINE = re.compile(
    r"^\s*(?P<source>\w+):\s+(?P<device>\S+)\s+(?P<kind>model|KV|output|compute) buffer size =\s*"
    r"(?P<mib>[0-9]+(?:\.[0-9]+)?) MiB"
)
# The KV cache's own account, printed even by a dry run (whose buffers are all 0 bytes), e.g.
# "llama_kv_cache: size =   24.00 MiB (  2048 cells,   3 layers,  4/4 seqs), K (f16): …"
_KV_PLANNED = re.compile(r"^\s*\w+: size =\s*(?P<mib>[0-9]+(?:\.[0-9]+)?) MiB \(")
MIB = 1024 * 1024


@dataclass
class Buffers:
    """Bytes llama.cpp allocated, by kind then device (devices as llama.cpp names them)."""

    model: dict[str, int] = field(default_factory=dict)
    kv: dict[str, int] = field(default_factory=dict)
    output: dict[str, int] = field(default_factory=dict)
    compute: dict[str, int] = field(default_factory=dict)
    kv_planned: int = 0  # every KV cache's "size = … MiB" line, summed (dry runs allocate nothing)

    def totals(self) -> dict[str, int]:
        return {kind: sum(getattr(self, kind).values()) for kind in ("model", "kv", "output", "compute")}


def parse_buffers(log: str) -> Buffers:
    buffers = Buffers()
    for line in log.splitlines():
        planned = _KV_PLANNED.match(line)
        if planned is not None:
            buffers.kv_planned += round(float(planned["mib"]) * MIB)
        match = _LINE.match(line)
        if match is None:
            continue
        kind = match["kind"].lower()
        by_device: dict[str, int] = getattr(buffers, kind)
        device = match["device"]
        by_device[device] = by_device.get(device, 0) + round(float(match["mib"]) * MIB)
    return buffers
