"""One RPC worker of a split replica: llama.cpp's RPC server on loopback, behind this agent's gate.

The gate (``nodeagent.rpc.tunnel.WorkerGate``) listens on the node's cluster address for the
worker's whole life, so its endpoint survives worker restarts; it lets through only the head the
control plane leased the worker to. The RPC server itself never listens beyond loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

import httpx
import psutil

from nodeagent.rpc.tunnel import WorkerGate
from nodeagent.supervisor.process import Launch, SupervisedProcess, free_port

log = logging.getLogger(__name__)


class RpcWorker(SupervisedProcess):
    kind = "RPC worker"

    _gate: WorkerGate
    _gate_endpoint: str

    @contextlib.asynccontextmanager
    async def alongside(self) -> AsyncIterator[None]:
        lease = self.spec.lease
        if lease is None:
            raise OSError("an RPC worker needs a lease (the head it serves)")
        settings = self._settings
        credentials = self._credentials
        if credentials is None:
            log.warning(
                "RPC worker %s: no node certificate (--uplink-insecure): the gate admits the head "
                "by its address %s only, unencrypted", self.spec.replica_id, lease.head_address,
            )  # fmt: skip
        host = settings.rpc_host or settings.advertise_host
        port = free_port(host, settings.rpc_port_range())
        self._gate = WorkerGate(credentials, ("127.0.0.1", 0), lease.head_node_id, lease.head_address)
        self._gate_endpoint = f"{settings.advertise_host}:{port}"
        stop, up = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(self._gate.serve(host, port, stop, up))
        waiting = asyncio.ensure_future(up.wait())
        await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if task.done():
            task.result()  # the gate could not listen: raises OSError, the replica fails and says why
        log.info(
            "RPC worker %s: gate on %s:%d for head node %s (layers %d-%d of %s)", self.spec.replica_id,
            host, port, lease.head_node_id, lease.first_layer, lease.last_layer, self.spec.model,
        )  # fmt: skip
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(task, return_exceptions=True)

    def launch(self) -> Launch:
        port = free_port("127.0.0.1")
        self._gate.rpc_address = ("127.0.0.1", port)
        threads = self.threads
        self._update(threads=threads)
        argv = [
            sys.executable, "-m", "nodeagent.rpc", "--host", "127.0.0.1", "--port", str(port),
            "--cache-dir", str(self._settings.data_dir / "rpc-cache"),
            "--cache-max", self._settings.rpc_cache_max, "--threads", str(threads),
            "--devices", "gpu" if self.spec.n_gpu_layers != 0 else "cpu",  # as the control plane planned
        ]  # fmt: skip
        return Launch(argv, self._gate_endpoint, f"127.0.0.1:{port}")

    async def healthy(self, client: httpx.AsyncClient, probe: str, pid: int) -> bool:
        """Listening and not stopped. Never connects: the server serves one client, the head."""
        port = int(probe.rsplit(":", 1)[1])
        try:
            process = psutil.Process(pid)
            if process.status() in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                return False
            connections = await asyncio.to_thread(process.net_connections, "tcp")
        except psutil.Error:
            return False
        return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr[1] == port for c in connections)
