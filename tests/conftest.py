"""Under `./dev test` (and so CI), a skipped test is a failure: every dependency the tests need is
installed by then, so a skip could only hide a test that did not run."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from tests.support_etcd import EtcdCluster


def _no_skips() -> bool:
    return os.environ.get("CAU_TEST_NO_SKIPS") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if _no_skips() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, which ./dev test does not allow (CAU_TEST_NO_SKIPS=1): {reason}"


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One real 3-member etcd cluster (Debian's etcd-server) for the whole session, started by
    the first test that asks for it. Tests share it through key prefixes of their own; a test
    that kills members starts a cluster of its own instead."""
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()
