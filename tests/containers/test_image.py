"""The image `make image` builds, run as the chart runs its pods: uid 10001, read-only root, every
capability dropped, no privilege escalation, /tmp and home on volumes; and under a memory limit."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import openai
import pytest

from tests.support import containers, oneshot
from tests.support.containers import podman
from tests.support.ports import server_port
from tests.support.wait import wait_until
from tests.unit.deploy.test_chart import render

pytestmark = pytest.mark.integration


def test_the_image_says_its_version_and_carries_llama_cpp_with_rpc() -> None:
    image = containers.image()
    assert podman("run", "--rm", image, "--version").stdout.strip() == "llamafleet 0.1.0"
    probe = "import json, llama_cpp as l; print(json.dumps([l.__version__, l.llama_supports_rpc()]))"
    out = podman("run", "--rm", "--entrypoint=python", image, "-c", probe).stdout
    assert json.loads(out) == ["0.3.36", True]  # libgomp is there: llama.cpp is built with OpenMP


def agent_security() -> list[str]:
    """The agent pod's securityContext as the chart renders it (the strictest: it runs engines)."""
    (agent,) = [o for o in render({}) if o["kind"] == "DaemonSet"]
    pod = agent["spec"]["template"]["spec"]
    return containers.security_args(pod, pod["containers"][0])


def test_up_in_the_image_under_the_charts_security_context_and_a_memory_limit_answers_a_chat(
    tmp_path: Path,
) -> None:
    image = containers.image()
    for folder in ("tmp", "home"):  # emptyDirs: writable by the pod's fsGroup
        (tmp_path / folder).mkdir(mode=0o777)
        (tmp_path / folder).chmod(0o1777)
    port = server_port()
    name = f"llamafleet-up-{port}"
    podman("run", "--detach", "--init", f"--name={name}", f"--label={containers.LABEL}", *agent_security(),
           f"--volume={tmp_path / 'tmp'}:/tmp", f"--volume={tmp_path / 'home'}:/var/lib/llamafleet",
           "--memory=2g", f"--publish=127.0.0.1:{port}:8080",
           image, "up", "--gateway-host=0.0.0.0")  # fmt: skip
    try:

        def logs() -> str:
            return podman("logs", name, check=False).stdout + podman("logs", name, check=False).stderr

        def serving() -> bool:
            state = podman("inspect", "--format={{.State.Running}}", name, check=False).stdout.strip()
            if state != "true":
                raise AssertionError(f"the container stopped:\n{logs()[-4000:]}")
            return "llamafleet is up" in logs()

        wait_until(serving, 240, "llamafleet up in the container", on_timeout=lambda: logs()[-4000:])
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        reply = client.chat.completions.create(
            model="smollm2-135m", messages=[{"role": "user", "content": "Say hi."}], max_tokens=8
        )
        assert reply.choices[0].message.content
        assert oneshot.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200

        # The node offers its cgroup's 2 GiB, not the machine's free memory.
        nodes = json.loads(podman("exec", name, "llamafleet", "nodes", "--json").stdout)
        (node,) = nodes
        assert 1.0 * 2**30 < node["ram_total_bytes"] <= 2 * 2**30, node
        assert node["ram_free_bytes"] < 2 * 2**30, node
        assert "cgroup's memory limit" in logs()
    finally:
        stopped = subprocess.run(["podman", "stop", "--time=20", name], capture_output=True, timeout=60)
        assert stopped.returncode == 0
        containers.remove(name)
