"""The README's "Several machines, without Kubernetes" block, run as written (issue 34, item 6): the
control plane and gateway on one host, an agent on another, each a network namespace on a bridge
(tests/support/netns.py), with only CP_IP, NODE_IP and the files the text says to copy filled in;
a client in a third place lists and chats. And an agent that leaves its address at the loopback
default is refused with what to set."""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import netns, oneshot
from tests.support.child_env import child_env
from tests.support.processes import REPO
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.skipif(bool(netns.available()), reason=netns.available())]

MODELS = """models:
  - name: smollm2-135m
    source: builtin:smollm2-135m
    contextLength: 512
    parallelSlots: 1
    threads: 1
"""


def readme_block() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Several machines, without Kubernetes", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


class Machine:
    def __init__(self, host: netns.Host, folder: Path) -> None:
        self.host, self.folder = host, folder
        (folder / "home").mkdir(parents=True)
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, line: str, values: dict[str, str]) -> subprocess.Popen[bytes]:
        for name, value in values.items():
            line = line.replace(name, value)
        argv = shlex.split(line.replace("~", str(self.folder / "home")))
        assert argv[0] == "llamafleet"
        log = self.folder / f"{argv[1]}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                self.host.command([sys.executable, "-m", "llamafleet.cli.main", *argv[1:]]),
                cwd=self.folder, stdout=out, stderr=subprocess.STDOUT,
                env=child_env(HOME=str(self.folder / "home"), PYTHONPATH=str(REPO)),
            )  # fmt: skip
        self.processes.append((process, log))
        return process

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for _, log in self.processes
        )

    def stop(self) -> None:
        for process, _ in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_the_readme_recipe_for_several_machines_runs_as_written(tmp_path: Path) -> None:
    controlplane_line, gateway_line, agent_line, curl_line = readme_block()
    with netns.network() as net:
        cp = Machine(net.add("cp"), tmp_path / "cp")
        node = Machine(net.add("node"), tmp_path / "node")
        stray = Machine(net.add("stray"), tmp_path / "stray")
        values = {"CP_IP": cp.host.address, "NODE_IP": node.host.address}
        (cp.folder / "models.yaml").write_text(MODELS)
        try:
            cp.start(controlplane_line, values)
            pki = cp.folder / "home" / ".cache" / "llamafleet" / "pki"
            wait_until(lambda: (pki / "bootstrap-token").exists() and (pki / "gateway").is_dir(), 60,
                       "the control plane's first start to make the PKI")  # fmt: skip
            cp.start(gateway_line, values)
            for machine in (node, stray):  # "copied from CP_IP's ~/.cache/llamafleet/pki"
                for name in ("ca.crt", "bootstrap-token"):
                    shutil.copy(pki / name, machine.folder / name)
            node.start(agent_line, values)
            # Another machine that runs the agent line without the address flags (the loopback default).
            bare = re.sub(r" --supervisor-(engine-bind-host|advertise-host) \S+", "", agent_line)
            stray.start(
                bare.replace("--uplink-controlplane", "--node-id stray --uplink-controlplane"), values
            )
            url = curl_line.split()[-1].replace("CP_IP", cp.host.address)
            assert url == f"http://{cp.host.address}:8080/v1/models"

            def ready() -> bool:
                try:
                    listed = oneshot.get(url, timeout=5)
                except httpx.HTTPError:
                    return False
                return listed.status_code == 200 and chat(url)

            wait_until(
                ready, 240, "a chat through the gateway", on_timeout=lambda: f"{cp.logs()}\n{node.logs()}"
            )
            wait_until(lambda: "a loopback address, but connects from" in stray.logs(), 60,
                       "the stray agent to be refused", on_timeout=stray.logs)  # fmt: skip
            assert f"--supervisor-advertise-host {stray.host.address}" in stray.logs()
            assert "Traceback" not in stray.logs()
        finally:
            for machine in (stray, node, cp):
                machine.stop()


def chat(models_url: str) -> bool:
    body = {"model": "smollm2-135m", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
    try:
        answer = oneshot.post(models_url.replace("/v1/models", "/v1/chat/completions"), json=body, timeout=60)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200
