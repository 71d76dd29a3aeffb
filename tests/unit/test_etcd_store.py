"""The etcd store without etcd: its options, and the error when none of its endpoints answers."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import ValidationError

from cau.errors import StoreUnavailable
from cau.store.etcd import EtcdOptions, EtcdStore
from tests.support_etcd import free_port


def test_options_name_endpoints_and_a_prefix() -> None:
    assert EtcdOptions(endpoints=["http://10.0.0.1:2379"], prefix="/site-a").prefix == "/site-a/"
    for bad in (
        {"endpoints": []},
        {"endpoints": ["10.0.0.1:2379"]},
        {"endpoints": ["http://h:2379"], "prefix": "/"},
    ):
        with pytest.raises(ValidationError):
            EtcdOptions.model_validate(bad)
    with pytest.raises(ValidationError, match="credentials") as err:
        EtcdOptions(endpoints=["http://root:hunter22@10.0.0.1:2379"])
    assert "hunter22" not in str(err.value)


def test_unreachable_endpoints_are_named_and_fail_within_the_timeout() -> None:
    endpoints = [f"http://127.0.0.1:{free_port()}" for _ in range(3)]  # nothing listens there

    async def main() -> None:
        store = EtcdStore(EtcdOptions(endpoints=endpoints, timeout=1.0))
        try:
            await store.get_run("r1")
        finally:
            await store.close()

    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="the etcd store is unreachable") as err:
        asyncio.run(main())
    assert time.monotonic() - started < 2.0
    assert all(f"{e}: cannot connect" in str(err.value) for e in endpoints)
    assert err.value.hint is not None and "systemctl status etcd" in err.value.hint
