"""Generates Python code from protos/**/*.proto into protos/gen (or another root, for the staleness test).

The sources live under protos/llamafleet/<service>/v<N>/. They are compiled under the virtual
path protos/gen/… so that generated modules import each other as ``protos.gen.llamafleet…``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "protos"


def generate(out_root: Path) -> list[Path]:
    """Compile every .proto; returns the generated files (relative to out_root)."""
    protos = sorted(p.relative_to(SOURCES) for p in SOURCES.glob("llamafleet/**/*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {SOURCES}")
    gen = out_root / "protos" / "gen"
    gen.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-Iprotos/gen={SOURCES}",
        f"-I{Path(protoc.__file__).parent / '_proto'}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[f"protos/gen/{p.as_posix()}" for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Packages all the way down, so mypy and setuptools see regular packages.
    for directory in [gen, *[d for d in gen.rglob("*") if d.is_dir() and d.name != "__pycache__"]]:
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text("")
    return sorted(
        p.relative_to(out_root) for p in gen.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT, help="root to generate into (default: the repo)")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
