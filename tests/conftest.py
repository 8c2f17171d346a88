"""Shared fixtures: the real SmolLM2 GGUF, free ports, and a real embedded cluster in a subprocess."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.service_vip import sweep_stale_vips
from nodeagent.cache.resolver import builtin_path
from tests.support.cluster import SMOLLM2_YAML, Cluster, start_cluster, stop_cluster
from tests.support.secret_scan import leaks

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return builtin_path("smollm2-135m")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of the test's own, for tests that stop, kill or reconfigure something."""
    running = start_cluster(tmp_path, SMOLLM2_YAML, ["smollm2-135m"])
    yield running
    stop_cluster(running)


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster (per test worker) for tests that only send requests and read answers: none may
    change it, and none may count on being its only client (compare counters before and after)."""
    running = start_cluster(tmp_path_factory.mktemp("shared"), SMOLLM2_YAML, ["smollm2-135m"])
    yield running
    stop_cluster(running)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Remove the Service VIP rules a killed benchmark left (bench/service_vip.py): they redirect a
    loopback port that free_port may give a test's server, whose clients would then reach nothing."""
    if hasattr(session.config, "workerinput"):  # the controller sweeps once, before workers start
        return
    swept = sweep_stale_vips()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if swept and reporter is not None:
        reporter.write_line(f"removed the NAT rules of dead processes' Service VIPs: {', '.join(swept)}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The log scan of the whole run (tests/support/secret_scan.py): a leak fails the run."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or session.config.option.collectonly:
        return
    try:
        base = factory.getbasetemp()
    except (OSError, ValueError):
        return
    problems = leaks(base)
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("secrets found in logs:\n  " + "\n  ".join(problems[:20]), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# --- parallel workers (pytest-xdist, `make test`) ------------------------------------------------
# A module whose tests share a module-scoped fixture (a cluster started once) runs on one worker;
# other tests spread one by one. Tests that share machine-wide resources run one group at a time:
# the podman networks and images of tests/containers, and the network namespaces and bridges of the
# root-only tests.
MACHINE_WIDE = {
    "containers": ("tests/containers/",),
    "root": ("tests/integration/test_chart_cluster.py", "tests/faults/test_link_cut.py",
             "tests/integration/test_split_cluster.py"),
}  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    # Declared here too: pytest-xdist declares it only when it is loaded (not under -p no:xdist).
    config.addinivalue_line("markers", "xdist_group(name): tests that run on one xdist worker")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: object, ids: list[str]) -> None:
    """Stop the run when pytest-xdist did not turn the groups into test ids: then nothing keeps a
    module's cluster on one worker or the machine-wide tests apart (pytest 9.2 with xdist 3.8 broke
    it silently once; pyproject.toml holds pytest below 9.2)."""
    prefixes = tuple(p for group in MACHINE_WIDE.values() for p in group)
    if any(i.startswith(prefixes) for i in ids) and not any("@" in i for i in ids):
        raise pytest.UsageError(
            "pytest-xdist did not apply the xdist_group markers (--dist loadgroup): check the pytest and "
            "pytest-xdist versions against pyproject.toml"
        )


def _shares_a_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info is not None else ()
    return any(d.scope in ("module", "class", "package") for each in defs for d in each)


# The longest-running files first (serial seconds measured on the 2-core machine, December 2026), so
# that no long test starts last and keeps one worker busy after the other has finished; within a
# file, and for every file not named here, collection order is kept. Only the order: no test depends
# on it.
LONGEST_FIRST = (
    *MACHINE_WIDE["root"],  # ~120 s, one group
    "tests/integration/test_autoscaling.py",  # ~90 s (the steady-load test alone ~35 s)
    "tests/integration/test_controlplane_failover.py",  # ~115 s
    "tests/faults/test_fuzz.py",  # ~45 s, one module cluster per target
    "tests/integration/test_openai_api.py",  # ~45 s, one group
    "tests/containers/",  # ~35 s, one group
    "tests/integration/test_engine_batching.py",
    "tests/integration/test_cert_rotation.py",
    "tests/integration/test_kubernetes_models.py",
    "tests/faults/test_engine_faults.py",
)


def _rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    return next((i for i, prefix in enumerate(LONGEST_FIRST) if path.startswith(prefix)), len(LONGEST_FIRST))


# tryfirst: xdist's own hook (in each worker) turns the markers into the group suffix of the test's
# id, so they must be on the items before it runs; added after, they were silently ignored.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: a file's tests stay together and in order
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        group = next((g for g, prefixes in MACHINE_WIDE.items() if path.startswith(prefixes)), None)
        if group is None and _shares_a_fixture(item):
            group = path
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
