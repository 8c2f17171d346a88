"""Security with real processes: node identity and mutual TLS on gRPC, scoped API keys with quotas
shared through a real Redis, engines that answer only their gateway, adapter loads confined to the
node's folders, and no secret in any log or metric (docs/SECURITY.md).

One cluster for the module: a control plane with the test PKI, one agent (node-a) that joined with
the bootstrap token, and two gateways sharing a Redis and one keys file.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import yaml

from controlplane.domain import Endpoint
from llamafleet.core.grpc_channels import CHANNEL_OPTIONS
from llamafleet.security import pki
from llamafleet.security.grpc_tls import ClientTls, CredentialFiles
from protos.gen.llamafleet.agent.v1 import agent_pb2 as agent_pb
from protos.gen.llamafleet.agent.v1 import agent_pb2_grpc
from protos.gen.llamafleet.cluster.v1 import cluster_pb2 as cluster_pb
from protos.gen.llamafleet.cluster.v1 import cluster_pb2_grpc
from tests.support import node_identity, oneshot
from tests.support.lora import write_lora
from tests.support.ports import server_port
from tests.support.process_cluster import engine_endpoint
from tests.support.processes import (
    REPO,
    Proc,
    agent_args,
    cluster_pki,
    controlplane_args,
    gateway_args,
    grpc_port,
    wait_ready,
)
from tests.support.redis_server import redis_server
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

MODEL = "smol"
KEYS = {"scoped": "lf-scoped-test-key-0123456789abcdef", "admin": "lf-admin-test-key-0123456789abcdef",
        "other": "lf-other-test-key-0123456789abcdef",
        "base": "lf-base-only-test-key-0123456789abc",
        "tpm": "lf-tokens-per-minute-test-key-01234",
        "team": "lf-team-tenant-test-key-0123456789"}  # fmt: skip
TPM = 200  # the "tpm" key's tokens per minute
RPM = 4  # the scoped key's requests per minute, shared by both gateways


@dataclass
class Secured:
    tmp: Path
    address: str
    gateways: list[str]
    procs: list[Proc]

    def post(
        self, gateway: int, key: str | None, model: str = MODEL, path: str = "/v1/completions"
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        body = {"model": model, "prompt": "Hi", "max_tokens": 2}
        return oneshot.post(f"{self.gateways[gateway]}{path}", json=body, headers=headers, timeout=60)


def keys_file(folder: Path) -> Path:
    from controlplane.gateway.access.api_keys import hash_key

    entries = [
        {"name": "scoped", "sha256": hash_key(KEYS["scoped"]), "models": [MODEL], "requestsPerMinute": RPM},
        {"name": "admin", "sha256": hash_key(KEYS["admin"]), "admin": True},
        {"name": "other", "sha256": hash_key(KEYS["other"]), "models": ["another-model"]},
        {"name": "base", "sha256": hash_key(KEYS["base"]), "models": [MODEL]},  # the base model, no adapter
        {"name": "tpm", "sha256": hash_key(KEYS["tpm"]), "tokensPerMinute": TPM},
        {"name": "team", "sha256": hash_key(KEYS["team"]), "tenant": "team-x", "priorities": ["sheddable"]},
    ]
    path = folder / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": entries}))
    return path


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    tmp = tmp_path_factory.mktemp("security")
    models = tmp / "models.yaml"
    models.write_text(f"models:\n  - name: {MODEL}\n    source: builtin:smollm2-135m\n"
                      "    contextLength: 512\n    parallelSlots: 2\n    threads: 1\n")  # fmt: skip
    port = grpc_port()
    address = f"127.0.0.1:{port}"
    with redis_server(tmp) as redis_url:
        procs = [Proc("controlplane", controlplane_args(tmp, port, "--models", str(models),
                                                        "--status-interval-s", "1", "--settle-s", "1"),
                      tmp / "cp.log").start()]  # fmt: skip
        procs.append(Proc("node-a", agent_args(tmp, address, "node-a"), tmp / "node-a.log").start())
        gateways = []
        for i in range(2):
            gw_port = server_port()
            args = [*gateway_args(address, gw_port, tmp), "--keys-file", str(keys_file(tmp)),
                    "--redis-url", redis_url, "--gateway-id", f"gw-{i}"]  # fmt: skip
            procs.append(Proc(f"gateway-{i}", args, tmp / f"gw-{i}.log").start())
            gateways.append(f"http://127.0.0.1:{gw_port}")
        secured = Secured(tmp, address, gateways, procs)
        try:
            for i, url in enumerate(gateways):
                wait_ready(procs[2 + i], f"{url}/healthz")

            def serving() -> bool:
                return all(secured.post(i, KEYS["admin"]).status_code == 200 for i in range(2))

            wait_until(serving, 120, "the model to serve through both gateways")
            yield secured
        finally:
            for proc in reversed(procs):
                if proc.alive():
                    proc.stop()


# --- node identity and TLS -------------------------------------------------------------------------


def llamafleet_agent(secured: Secured, node: str, *flags: str) -> subprocess.CompletedProcess[str]:
    args = [*agent_args(secured.tmp, secured.address, node), "--supervisor-data-dir",
            str(secured.tmp / f"intruder-{node}-{len(flags)}"), *flags]  # fmt: skip
    return subprocess.run([sys.executable, "-m", "llamafleet.cli.main", *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO)  # fmt: skip


def test_a_wrong_token_cannot_join_and_a_right_one_cannot_take_a_connected_node(secured: Secured) -> None:
    wrong = secured.tmp / "wrong-token"
    wrong.write_text("not-the-token\n")
    refused = llamafleet_agent(secured, "node-x", "--uplink-bootstrap-token-file", str(wrong))
    assert refused.returncode == 1
    join = join_port(secured)
    assert refused.stderr.strip().splitlines()[-1] == (
        f"llamafleet: the control plane at {join} refused to let node node-x join: "
        "bootstrap token not accepted"
    )
    taken = llamafleet_agent(secured, "node-a")  # the right token, a connected node's name
    assert taken.returncode == 1
    assert "node node-a is connected with its own certificate" in taken.stderr
    assert "Traceback" not in refused.stderr + taken.stderr
    assert secured.post(0, KEYS["admin"]).status_code == 200  # node-a kept its replica and serves


def channel(secured: Secured, credential: Path | None) -> grpc.aio.Channel:
    if credential is None:
        return grpc.aio.insecure_channel(secured.address, options=CHANNEL_OPTIONS)
    return ClientTls(CredentialFiles(credential)).channel(secured.address)


def issue(secured: Secured, node: str) -> Path:
    """A genuine node certificate for ``node`` (as a join would give), in its own folder."""
    folder = secured.tmp / f"cert-{node}"
    authority = pki.Authority.load(cluster_pki(secured.tmp))
    key = pki.new_key()
    cert = authority.issue_node(node, pki.csr_for(node, key), datetime.timedelta(hours=1))
    pki.write_credential(folder, pki.cert_pem(authority.cert), cert, key)
    return folder


async def connect_as(
    secured: Secured, credential: Path | None, claimed: str, advertise: str = "127.0.0.1"
) -> grpc.StatusCode:
    async with channel(secured, credential) as ch:
        call = agent_pb2_grpc.AgentServiceStub(ch).Connect(timeout=10)
        hello = agent_pb.Hello(node_id=claimed, advertise_host=advertise)
        await call.write(agent_pb.AgentMessage(hello=hello))
        try:
            await call.read()
            return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            return exc.code()


async def watch_routes(secured: Secured, credential: Path | None) -> grpc.StatusCode:
    async with channel(secured, credential) as ch:
        stream = cluster_pb2_grpc.ClusterServiceStub(ch).WatchRoutes(
            cluster_pb.WatchRoutesRequest(), timeout=10
        )
        try:
            await stream.read()
            return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            return exc.code()


def test_grpc_admits_each_identity_to_its_own_calls_only(secured: Secured) -> None:
    node_b = issue(secured, "node-b")
    gateway = cluster_pki(secured.tmp) / "gateway"
    assert asyncio.run(connect_as(secured, node_b, "node-a")) == grpc.StatusCode.PERMISSION_DENIED
    assert asyncio.run(connect_as(secured, gateway, "node-a")) == grpc.StatusCode.PERMISSION_DENIED
    assert asyncio.run(watch_routes(secured, node_b)) == grpc.StatusCode.PERMISSION_DENIED  # engine secrets
    assert asyncio.run(watch_routes(secured, gateway)) == grpc.StatusCode.OK
    # Plaintext, and TLS without a client certificate, never get past the handshake.
    assert asyncio.run(watch_routes(secured, None)) == grpc.StatusCode.UNAVAILABLE
    foreign = secured.tmp / "foreign"
    other_ca, other_key = pki.new_ca("someone else's CA")
    impostor = pki.new_key()
    forged = pki.Authority(other_ca, other_key).issue_role("gateway", impostor, datetime.timedelta(hours=1))
    pki.write_credential(foreign, (cluster_pki(secured.tmp) / "ca.crt").read_bytes(), forged, impostor)
    assert asyncio.run(watch_routes(secured, foreign)) == grpc.StatusCode.UNAVAILABLE
    assert secured.post(0, KEYS["admin"]).status_code == 200


# --- API keys, scopes and quotas --------------------------------------------------------------------


def join_port(secured: Secured) -> str:
    return f"127.0.0.1:{int(secured.address.rsplit(':')[1]) + 1}"


async def join_rpc(secured: Secured, node: str, token: str | None = None) -> tuple[grpc.StatusCode, Path]:
    return await node_identity.join(join_port(secured), cluster_pki(secured.tmp), node, secured.tmp, token)


async def renew_rpc(secured: Secured, credential: Path, node: str) -> tuple[grpc.StatusCode, Path]:
    return await node_identity.renew(secured.address, credential, node, secured.tmp)


def llamafleet_cli(secured: Secured, *args: str) -> subprocess.CompletedProcess[str]:
    admin = cluster_pki(secured.tmp) / "admin"
    return subprocess.run([sys.executable, "-m", "llamafleet.cli.main", *args, "--controlplane",
                           secured.address, "--tls-dir", str(admin)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)  # fmt: skip


def test_a_known_node_id_joins_with_a_new_key_only_after_an_operator_forgets_it(secured: Secured) -> None:
    code, first = asyncio.run(join_rpc(secured, "node-p"))
    assert code == grpc.StatusCode.OK
    assert asyncio.run(connect_as(secured, first, "node-p")) == grpc.StatusCode.OK
    # node-p is not connected now: the token alone must not give its id to a new key.
    code, _ = asyncio.run(join_rpc(secured, "node-p"))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    forgotten = llamafleet_cli(secured, "nodes", "forget", "node-p")
    assert forgotten.returncode == 0, forgotten.stderr
    assert "node node-p forgotten: its certificates are refused" in forgotten.stdout
    assert asyncio.run(connect_as(secured, first, "node-p")) == grpc.StatusCode.UNAUTHENTICATED
    code, second = asyncio.run(join_rpc(secured, "node-p"))
    assert code == grpc.StatusCode.OK
    assert asyncio.run(connect_as(secured, second, "node-p")) == grpc.StatusCode.OK
    # Only an admin may forget.
    gateway = cluster_pki(secured.tmp) / "gateway"
    denied = subprocess.run([sys.executable, "-m", "llamafleet.cli.main", "nodes", "forget", "node-p",
                             "--controlplane", secured.address, "--tls-dir", str(gateway)],
                            capture_output=True, text=True, timeout=60, cwd=REPO)  # fmt: skip
    assert denied.returncode == 1
    assert "PERMISSION_DENIED" in denied.stderr
    assert "Traceback" not in denied.stderr
    assert asyncio.run(connect_as(secured, second, "node-p")) == grpc.StatusCode.OK


def test_a_renewal_retires_the_old_key_for_every_holder_of_it(secured: Secured) -> None:
    code, old = asyncio.run(join_rpc(secured, "node-r"))
    assert code == grpc.StatusCode.OK
    code, new = asyncio.run(renew_rpc(secured, old, "node-r"))
    assert code == grpc.StatusCode.OK
    # Until the new key connects, the old one still may (the renewal's answer could have been lost).
    assert asyncio.run(connect_as(secured, old, "node-r")) == grpc.StatusCode.OK
    assert asyncio.run(connect_as(secured, new, "node-r")) == grpc.StatusCode.OK
    # From now on a copy of the old certificate and key is worth nothing: no stream, no renewal.
    assert asyncio.run(connect_as(secured, old, "node-r")) == grpc.StatusCode.UNAUTHENTICATED
    code, _ = asyncio.run(renew_rpc(secured, old, "node-r"))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert asyncio.run(connect_as(secured, new, "node-r")) == grpc.StatusCode.OK


def test_forgetting_a_connected_node_ends_its_stream_and_its_agent_joins_again(secured: Secured) -> None:
    identity = secured.tmp / "node-a" / "identity" / "node-a"
    before = (identity / "tls.crt").read_bytes()
    copied = secured.tmp / "node-a-copied"
    copied.mkdir()
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (copied / name).write_bytes((identity / name).read_bytes())
    forgotten = llamafleet_cli(secured, "nodes", "forget", "node-a")
    assert forgotten.returncode == 0, forgotten.stderr
    assert "its stream was ended" in forgotten.stdout
    # The agent is refused with its old key, sets it aside, and joins again with the bootstrap token.
    wait_until(lambda: (identity / "tls.crt").exists() and (identity / "tls.crt").read_bytes() != before,
               60, "node-a to join again with a new key")  # fmt: skip
    assert (identity / "tls.crt.refused").read_bytes() == before
    wait_until(lambda: secured.post(0, KEYS["admin"]).status_code == 200, 60, "node-a to serve again")
    assert asyncio.run(connect_as(secured, copied, "node-a")) == grpc.StatusCode.UNAUTHENTICATED


def test_a_node_must_connect_from_the_address_it_advertises(secured: Secured) -> None:
    code, credential = asyncio.run(join_rpc(secured, "node-m"))
    assert code == grpc.StatusCode.OK
    # Engines "on" the cloud metadata address, or any other host: the stream is refused.
    for elsewhere in ("169.254.169.254", "10.9.9.9", ""):
        refused = asyncio.run(connect_as(secured, credential, "node-m", advertise=elsewhere))
        assert refused == grpc.StatusCode.FAILED_PRECONDITION, elsewhere
    assert asyncio.run(connect_as(secured, credential, "node-m", advertise="localhost")) == grpc.StatusCode.OK
    log = (secured.tmp / "cp.log").read_text()
    assert "node node-m advertises 169.254.169.254 but connects from 127.0.0.1" in log


def test_joins_are_rate_limited_per_address(secured: Secured) -> None:
    codes = [asyncio.run(join_rpc(secured, "node-z", token="not-the-token"))[0] for _ in range(40)]
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert codes[0] == grpc.StatusCode.UNAUTHENTICATED  # the token is checked after the rate
    # The bucket refills: a join gets through again within seconds.

    def refilled() -> bool:
        return asyncio.run(join_rpc(secured, "node-z", token="x"))[0] == grpc.StatusCode.UNAUTHENTICATED

    wait_until(refilled, 30, "the join rate to allow a join again")


def test_keys_are_required_and_scoped(secured: Secured) -> None:
    missing = secured.post(0, None)
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error"
    assert secured.post(0, "lf-made-up").status_code == 401
    other = secured.post(1, KEYS["other"])
    assert other.status_code == 403
    assert other.json()["error"]["message"] == "API key 'other' may not use model 'smol'"
    admin_route = oneshot.get(f"{secured.gateways[0]}/v1/replicas/{MODEL}/slots",
                            headers={"authorization": f"Bearer {KEYS['other']}"}, timeout=10)  # fmt: skip
    assert admin_route.status_code == 403
    assert admin_route.json()["error"]["type"] == "permission_error"
    listed = oneshot.get(f"{secured.gateways[0]}/v1/models", headers={"x-api-key": KEYS["other"]}, timeout=10)
    assert listed.json()["data"] == []  # a key sees only the models it may use
    allowed = oneshot.get(f"{secured.gateways[0]}/v1/replicas/{MODEL}/slots",
                        headers={"authorization": f"Bearer {KEYS['admin']}"}, timeout=10)  # fmt: skip
    assert allowed.status_code == 200


def test_a_request_queues_as_its_keys_tenant_and_only_with_the_headers_the_key_allows(
    secured: Secured,
) -> None:
    url = f"{secured.gateways[0]}/v1/completions"
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 2}

    def post(**headers: str) -> httpx.Response:
        return oneshot.post(url, json=body, headers={"authorization": f"Bearer {KEYS['team']}", **headers},
                            timeout=60)  # fmt: skip

    assert post(**{"x-llamafleet-priority": "sheddable"}).status_code == 200
    critical = post(**{"x-llamafleet-priority": "critical"})
    assert critical.status_code == 403
    assert critical.json()["error"]["message"] == "API key 'team' may not ask for priority 'critical'"
    assert post(**{"x-llamafleet-tenant": "someone-else"}).status_code == 403
    malformed = post(**{"x-llamafleet-ttft-objective-ms": "soon"})
    assert malformed.status_code == 400
    assert malformed.json()["error"]["param"] == "x-llamafleet-ttft-objective-ms"
    metrics = oneshot.get(f"{secured.gateways[0]}/metrics", timeout=10).text
    assert 'llamafleet_gateway_tenant_admitted_total{tenant="team-x"} 1.0' in metrics


def test_an_idle_tenant_preempts_a_flood_across_gateways_and_the_flood_resumes(secured: Secured) -> None:
    # Tenant "base" fills both slots through gateway 0; tenant "team-x" asks through gateway 1, which
    # counts tenants' requests in flight through Redis: it sends the request at once, naming "base"
    # for the engine to suspend, and the short answer ends before the long ones, which still finish.
    long_body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 200, "ignore_eos": True,
                 "temperature": 0}  # fmt: skip
    admin = {"authorization": f"Bearer {KEYS['admin']}"}
    assert secured.post(1, KEYS["base"]).status_code == 200  # gateway 1 has seen tenant "base"

    async def scenario() -> tuple[list[float], float, list[httpx.Response]]:
        async with httpx.AsyncClient(timeout=300) as client:

            async def ask(gateway: int, key: str, body: dict[str, object]) -> tuple[httpx.Response, float]:
                headers = {"authorization": f"Bearer {KEYS[key]}"}
                response = await client.post(f"{secured.gateways[gateway]}/v1/completions", json=body,
                                             headers=headers)  # fmt: skip
                return response, asyncio.get_running_loop().time()

            flood = [asyncio.create_task(ask(0, "base", long_body)) for _ in range(2)]
            slots_url = f"{secured.gateways[0]}/v1/replicas/{MODEL}/slots"
            for _ in range(3000):  # until both slots generate
                replicas = (await client.get(slots_url, headers=admin)).json()["data"]
                if sum(s["state"] == "generating" for r in replicas for s in r["result"]) == 2:
                    break
                await asyncio.sleep(0.02)
            short, short_end = await ask(1, "team", {"model": MODEL, "prompt": "Hi", "max_tokens": 2})
            assert short.status_code == 200, short.text
            done = await asyncio.gather(*flood)
            return [end for _, end in done], short_end, [r for r, _ in done]

    long_ends, short_end, answers = asyncio.run(scenario())
    assert short_end < min(long_ends)  # it did not wait for a slot to free
    assert [a.json()["usage"]["completion_tokens"] for a in answers] == [200, 200]
    metrics = oneshot.get(f"{secured.gateways[1]}/metrics", timeout=10).text
    assert 'llamafleet_gateway_preemptions_total{model="smol",tenant="base"} 1.0' in metrics


def test_a_quota_is_shared_by_two_gateways_through_redis(secured: Secured) -> None:
    answers = [secured.post(i % 2, KEYS["scoped"]).status_code for i in range(RPM + 2)]
    assert answers.count(200) == RPM, answers  # each gateway alone would have let 2 × RPM through
    refused = secured.post(0, KEYS["scoped"])
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert secured.post(1, KEYS["admin"]).status_code == 200  # another key is not held back
    metrics = oneshot.get(f"{secured.gateways[0]}/metrics", timeout=10).text
    assert 'llamafleet_gateway_key_refused_total{key="scoped",why="quota"}' in metrics
    assert re.search(r'llamafleet_gateway_key_tokens_total\{key="scoped",model="smol"\} [1-9]', metrics)


def test_a_token_quota_counts_prompts_of_streams_that_did_not_ask_for_usage(secured: Secured) -> None:
    """A stream without stream_options.include_usage used to be charged only its content chunks: a
    ~300-token prompt with max_tokens 1 cost 1 token, and the key's quota never filled. Its real
    tokens count now, and its client still gets no usage chunk it did not ask for."""
    headers = {"authorization": f"Bearer {KEYS['tpm']}"}
    body = {"model": MODEL, "max_tokens": 1, "stream": True,
            "messages": [{"role": "user", "content": "hello " * 300}]}  # fmt: skip
    url = f"{secured.gateways[0]}/v1/chat/completions"
    with oneshot.stream("POST", url, json=body, headers=headers, timeout=60) as first:
        assert first.status_code == 200
        events = [line for line in first.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert not any('"usage"' in e and '"choices":[]' in e.replace(" ", "") for e in events)

    # Refused at once, whenever the settling lands: admission reserved the prompt's estimate.
    second = oneshot.post(f"{secured.gateways[1]}/v1/chat/completions", json={**body, "stream": False},
                        headers=headers, timeout=60)  # fmt: skip
    assert second.status_code == 429, second.text[:300]
    assert "200 tokens per minute" in second.json()["error"]["message"]
    wait_until(lambda: "key=\"tpm\"" in oneshot.get(f"{secured.gateways[0]}/metrics", timeout=10).text, 10,
               "the stream's tokens in the key's metrics")  # fmt: skip
    metrics = oneshot.get(f"{secured.gateways[0]}/metrics", timeout=10).text
    charged = re.search(r'llamafleet_gateway_key_tokens_total\{key="tpm",model="smol"\} ([0-9.e+]+)', metrics)
    assert charged is not None
    assert float(charged.group(1)) >= 250, charged.group(0)


# --- engines behind the gateway --------------------------------------------------------------------


def test_an_engine_answers_only_with_its_replica_secret(secured: Secured) -> None:
    engine: Endpoint = engine_endpoint(secured.address, secured.tmp)
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 2}
    assert oneshot.post(f"{engine.url}/v1/completions", json=body, timeout=30).status_code == 401
    wrong = {"authorization": "Bearer not-the-secret"}
    assert (
        oneshot.post(f"{engine.url}/v1/completions", json=body, headers=wrong, timeout=30).status_code == 401
    )
    assert oneshot.get(f"{engine.url}/slots", timeout=30).status_code == 401
    right = {"authorization": f"Bearer {engine.secret}"}
    assert (
        oneshot.post(f"{engine.url}/v1/completions", json=body, headers=right, timeout=30).status_code == 200
    )
    assert oneshot.get(f"{engine.url}/health", timeout=30).status_code == 200  # the agent's liveness probe


# --- adapter loads confined to the node's folders ---------------------------------------------------


def test_adapters_load_only_from_the_nodes_adapter_folder(secured: Secured, smollm2_path: Path) -> None:
    folder = secured.tmp / "node-a" / "adapters"  # the agent's default: DATA_DIR/adapters
    folder.mkdir(parents=True, exist_ok=True)
    inside = write_lora(smollm2_path, folder / "tone.gguf")
    outside = write_lora(smollm2_path, secured.tmp / "elsewhere.gguf", seed=2)
    (folder / "escape.gguf").symlink_to(outside)
    admin = {"authorization": f"Bearer {KEYS['admin']}"}

    def load(name: str, path: str) -> httpx.Response:
        return oneshot.post(f"{secured.gateways[0]}/v1/replicas/{MODEL}/adapters", headers=admin,
                          json={"name": name, "path": path, "scale": 1.0}, timeout=60)  # fmt: skip

    for name, path in (("abs", str(outside)), ("dots", f"{folder}/../elsewhere.gguf"),
                       ("link", str(folder / "escape.gguf")), ("rel", "../../elsewhere.gguf")):  # fmt: skip
        refused = load(name, path)
        assert refused.status_code == 403, (path, refused.text)
        assert refused.json()["error"]["type"] == "permission_error"
    assert load("tone", "tone.gguf").status_code == 200  # relative to the folder
    assert load("tone-abs", str(inside)).status_code == 200


def test_a_key_scoped_to_the_base_cannot_apply_an_adapter_through_lora(
    secured: Secured, smollm2_path: Path
) -> None:
    """``lora`` in the body is an adapter choice like ``base:adapter`` in ``model``: the key's scopes are
    checked for each (as ``model:adapter``), and an error names nothing the key cannot see."""
    folder = secured.tmp / "node-a" / "adapters"
    folder.mkdir(parents=True, exist_ok=True)
    write_lora(smollm2_path, folder / "team-b.gguf", seed=3)
    admin = {"authorization": f"Bearer {KEYS['admin']}"}
    loaded = oneshot.post(f"{secured.gateways[0]}/v1/replicas/{MODEL}/adapters", headers=admin,
                        json={"name": "team-b", "path": "team-b.gguf"}, timeout=60)  # fmt: skip
    assert loaded.status_code == 200, loaded.text
    base = {"authorization": f"Bearer {KEYS['base']}"}
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 2}
    url = f"{secured.gateways[0]}/v1/completions"
    assert oneshot.post(url, json=body, headers=base, timeout=60).status_code == 200
    for asked in ({**body, "lora": [{"name": "team-b"}]}, {**body, "model": f"{MODEL}:team-b"}):
        refused = oneshot.post(url, json=asked, headers=base, timeout=60)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["message"] == f"API key 'base' may not use model '{MODEL}:team-b'"
    chat = {"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}],
            "lora": [{"name": "team-b", "scale": 0.5}]}  # fmt: skip
    chat_url = f"{secured.gateways[1]}/v1/chat/completions"
    assert oneshot.post(chat_url, json=chat, headers=base, timeout=60).status_code == 403
    # An adapter that is not loaded: the answer does not list the ones that are.
    unknown = oneshot.post(url, json={**body, "lora": [{"name": "nope"}]}, headers=admin, timeout=60)
    assert unknown.status_code == 404, unknown.text
    assert "team-b" not in unknown.text
    applied = oneshot.post(url, json={**body, "lora": [{"name": "team-b"}]}, headers=admin, timeout=60)
    assert applied.status_code == 200


def test_client_strings_never_become_unbounded_metric_labels(secured: Secured) -> None:
    """A model name is capped (400), and a name the gateway does not serve is counted as ``other``: 20
    requests for unknown 100 kB names once grew /metrics from 3.7 KB to 8 MB."""
    url = f"{secured.gateways[0]}/v1/completions"
    admin = {"authorization": f"Bearer {KEYS['admin']}"}
    huge = oneshot.post(url, json={"model": "m" * 100_000, "prompt": "Hi"}, headers=admin, timeout=60)
    assert huge.status_code == 400, huge.text[:300]
    assert huge.json()["error"]["param"] == "model"
    before = oneshot.get(f"{secured.gateways[0]}/metrics", timeout=10).text
    for i in range(20):
        name = f"no-such-model-{i}-" + "x" * 200
        unknown = oneshot.post(url, json={"model": name, "prompt": "Hi"}, headers=admin, timeout=60)
        assert unknown.status_code == 404
    after = oneshot.get(f"{secured.gateways[0]}/metrics", timeout=10).text
    assert "no-such-model" not in after
    assert 'model="other"' in after
    assert len(after) < len(before) + 4000, (len(before), len(after))


# --- no secret anywhere it could leak ---------------------------------------------------------------


def test_no_key_token_or_secret_in_any_log_or_metric(secured: Secured) -> None:
    for i in range(2):
        secured.post(i, KEYS["admin"])
        secured.post(i, "lf-wrong-key-that-must-not-be-logged")
    engine = engine_endpoint(secured.address, secured.tmp)
    folder = cluster_pki(secured.tmp)
    secrets = {
        "bootstrap token": pki.read_tokens(folder / "bootstrap-token")[0],
        "engine secret": engine.secret,
        "wrong key": "lf-wrong-key-that-must-not-be-logged",
        **{f"{name} key": key for name, key in KEYS.items()},
    }
    texts = {str(p): p.read_text(errors="replace") for p in secured.tmp.rglob("*.log")}
    texts |= {f"metrics of {url}": oneshot.get(f"{url}/metrics", timeout=10).text for url in secured.gateways}
    assert len(texts) >= 5  # the control plane's, the agent's, its engine's, both gateways'
    for where, text in texts.items():
        for what, secret in secrets.items():
            assert secret not in text, f"the {what} appears in {where}"
        assert "PRIVATE KEY" not in text, where
    assert os.stat(folder / "ca.key").st_mode & 0o077 == 0  # private keys readable by their owner only
    assert os.stat(secured.tmp / "node-a" / "identity" / "node-a" / "tls.key").st_mode & 0o077 == 0
