"""The corrupt-GGUF zoo, table-driven: every kind gives ModelFileInvalid saying what is wrong, quickly,
in bounded memory; the unreadable file is read as an unprivileged user (root reads anything)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llamafleet.core.errors import ModelFileInvalid
from nodeagent.gguf.header import read_header
from tests.support import gguf_zoo

NAMES = sorted([*gguf_zoo.CASES, "a-directory"])


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> dict[str, tuple[Path, str]]:
    return gguf_zoo.build(tmp_path_factory.mktemp("zoo"), smollm2_path)


def test_the_zoo_has_every_kind_the_issue_names() -> None:
    assert len([*gguf_zoo.CASES, *gguf_zoo.SPECIAL]) >= 12


@pytest.mark.parametrize("name", NAMES)
def test_each_broken_file_says_what_is_wrong(zoo: dict[str, tuple[Path, str]], name: str) -> None:
    path, says = zoo[name]
    with pytest.raises(ModelFileInvalid) as caught:
        read_header(path)
    assert says in caught.value.message
    assert str(path) in caught.value.message


REPO = Path(__file__).resolve().parents[3]

READ = """
import sys
from pathlib import Path
from llamafleet.core.errors import ModelFileInvalid
from nodeagent.gguf.header import read_header
try:
    read_header(Path(sys.argv[1]))
except ModelFileInvalid as exc:
    print(exc.message)
# this process's own peak (ru_maxrss would carry the forking parent's across exec)
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


def read_elsewhere(path: Path, *prefix: str) -> tuple[str, int]:
    """read_header in a fresh process (run through ``prefix``): (its error message, its peak memory, KiB)."""
    done = subprocess.run([*prefix, sys.executable, "-c", READ, str(path)], capture_output=True, text=True,
                          timeout=60, cwd=REPO)  # fmt: skip
    assert done.returncode == 0, done.stderr
    message, peak = done.stdout.strip().splitlines()
    return message, int(peak)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_an_unreadable_file_says_permission_denied(zoo: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(zoo["unknown-architecture"][0].read_bytes()[:4096])
    os.chown(path, 65534, 65534)
    path.chmod(0o600)
    # Root without the capabilities that let it read anything: as an agent without access would be.
    no_override = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-all")
    message, _ = read_elsewhere(path, *no_override)
    assert gguf_zoo.SPECIAL["unreadable"] in message


def test_absurd_counts_are_refused_in_bounded_memory(zoo: dict[str, tuple[Path, str]]) -> None:
    """Each absurd case read in a fresh process: its peak memory stays near an interpreter's."""
    for name in ("absurd-tensor-count", "absurd-metadata-count", "key-length-past-end"):
        message, peak_kib = read_elsewhere(zoo[name][0])
        assert zoo[name][1] in message
        assert peak_kib < 200 * 1024, name  # a header read, not the file or the declared counts
