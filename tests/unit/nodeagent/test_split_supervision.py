"""A split head's agent checks every worker's gate before starting the engine, and an RPC worker's
gate admits only its lease: the agent side of layer splits, on real sockets and real processes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import psutil

from llamafleet.contract.replica import RemotePart, ReplicaSpec, Role, RpcLease
from nodeagent.domain import Phase
from nodeagent.settings import SupervisorSettings
from nodeagent.supervisor.process import Launch
from nodeagent.supervisor.replica import EngineReplica
from nodeagent.supervisor.rpc_worker import RpcWorker
from tests.support.ports import server_port


def test_a_head_whose_worker_is_unreachable_says_which_one_before_starting_an_engine(tmp_path: Path) -> None:
    dead = server_port()  # nothing listens there
    spec = ReplicaSpec("r1", "smollm2", "builtin:smollm2-135m",
                       remote_parts=(RemotePart("node-b", f"127.0.0.1:{dead}", 0, 14),))  # fmt: skip
    replica = EngineReplica(spec, 1, SupervisorSettings(data_dir=tmp_path), lambda: None)
    problem = asyncio.run(replica.precheck())
    assert problem.startswith(f"cannot reach the RPC worker on node node-b at 127.0.0.1:{dead}")


async def _worker_lifecycle(tmp: Path) -> tuple[str, bool, bool, Phase, list[str]]:
    settings = SupervisorSettings(data_dir=tmp, health_interval_s=0.2, stop_grace_s=5)
    lease = RpcLease("node-a", "127.0.0.2", "r1", 0, 14)
    spec = ReplicaSpec("r1-rpc0", "smollm2", "builtin:smollm2-135m", role=Role.RPC_WORKER, lease=lease,
                       n_gpu_layers=0)  # its range planned in host memory  # fmt: skip
    worker = RpcWorker(spec, 1, settings, lambda: None)
    task = asyncio.create_task(worker.run())
    for _ in range(150):
        if worker.state.phase == Phase.READY:
            break
        await asyncio.sleep(0.1)
    endpoint = worker.state.endpoint
    host, port = endpoint.rsplit(":", 1)
    # No certificates: the gate admits the head's address only. 127.0.0.1 is not the lease's 127.0.0.2.
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=("127.0.0.1", 0))
    refused = await reader.read(1) == b""
    writer.close()
    # From the leased address the connection is carried to llama.cpp's RPC server (it waits for a command).
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=("127.0.0.2", 0))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.5)
    carried = not reader.at_eof()
    writer.close()
    ready_phase = worker.state.phase
    cmdline = psutil.Process(worker.state.pid).cmdline()
    worker.stop.set()
    await task
    return endpoint, refused, carried, ready_phase, cmdline


def test_an_rpc_worker_is_supervised_behind_a_gate_that_admits_only_its_head(tmp_path: Path) -> None:
    endpoint, refused, carried, phase, cmdline = asyncio.run(_worker_lifecycle(tmp_path))
    assert phase == Phase.READY
    assert cmdline[cmdline.index("--devices") + 1] == "cpu"  # what the control plane planned for its range
    assert endpoint.startswith("127.0.0.1:")
    assert refused
    assert carried
    with socket.socket() as s:  # unassigned: the gate stopped with the worker
        assert s.connect_ex(("127.0.0.1", int(endpoint.rsplit(":", 1)[1]))) != 0


def test_an_engines_port_is_held_from_the_moment_it_is_chosen(tmp_path: Path) -> None:
    """The agent binds the engine's port and hands the socket over: no local process can take it (and
    then receive the agent's health checks, which carry the replica secret) before the engine serves."""
    port = server_port()
    settings = SupervisorSettings(data_dir=tmp_path, engine_ports=f"{port}-{port}")
    replica = EngineReplica(ReplicaSpec("r1", "smollm2", "builtin:smollm2-135m"), 1, settings, lambda: None)

    async def launched() -> Launch:
        assert await replica.prepare()
        async with replica.alongside():  # as the supervisor runs each start
            return replica.launch()

    launch = asyncio.run(launched())
    try:
        assert launch.listening is not None
        assert launch.probe == f"http://127.0.0.1:{port}"
        flag = launch.argv.index("--listen-fd")
        assert launch.argv[flag + 1] == str(launch.listening.fileno())  # the engine serves on it
        squatter = socket.socket()
        with contextlib.closing(squatter), contextlib.suppress(OSError):
            squatter.bind(("127.0.0.1", port))
            raise AssertionError(f"another process could bind the engine's port {port}")
    finally:
        if launch.listening is not None:
            launch.listening.close()
