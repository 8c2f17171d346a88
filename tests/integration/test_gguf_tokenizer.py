"""The load generator's tokenizer is made from the GGUF the servers load (bench/gguf_tokenizer.py), and
counts exactly as llama.cpp does: same ids for the same text, so requested lengths are served lengths."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from bench.engine import gemma3_path
from tests.support.processes import REPO

pytestmark = pytest.mark.integration

WORDS = [
    "alpha",
    "Gamma",
    "délta",
    "42",
    "x+y",
    "\n",
    "  ",
    "don't",
    "I'm",
    "3.14",
    "日本語",
    "\t",
    "ünïcode",
]


def test_smollm2s_tokenizer_json_gives_llama_cpps_ids(smollm2_path: Path, tmp_path: Path) -> None:
    rng = random.Random(7)
    texts = [
        "Hello world",
        "def f(x):\n    return x**2  # ü ß",
        "<|im_start|>user\nHi<|im_end|>",
        "1234567890",
    ]
    texts += [" ".join(rng.choice(WORDS) for _ in range(60)) for _ in range(30)]
    # In a child: importing llama_cpp leaves a /dev/null file open that pytest would report.
    script = (
        "import json, sys; from pathlib import Path; from bench.gguf_tokenizer import check, write; "
        "model, out = Path(sys.argv[1]), write(Path(sys.argv[1]), Path(sys.argv[2])); "
        "print(json.dumps(check(model, out, json.loads(sys.stdin.read()))))"
    )
    done = subprocess.run([sys.executable, "-c", script, str(smollm2_path), str(tmp_path / "tok")], cwd=REPO,
                          input=json.dumps(texts), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    assert (tmp_path / "tok" / "tokenizer.json").is_file()


def test_a_tokenizer_it_cannot_rebuild_is_refused_in_one_line(tmp_path: Path) -> None:
    gemma3 = gemma3_path()
    assert gemma3 is not None
    done = subprocess.run([sys.executable, "bench/gguf_tokenizer.py", str(gemma3), str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().startswith("gguf_tokenizer: gemma-3-270m-q4_k_m.gguf: tokenizer model 'llama'")
    assert "Traceback" not in done.stderr
