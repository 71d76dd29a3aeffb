"""The self-updating lab (`cau lab up --pacemaker --self-updating`) without a lab: its option,
the files it writes (etcd's, cau's config on the hosts and on this machine, the wrapper), and the
checks that refuse what cannot work."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

from cau.config import CauConfig
from cau.store.etcd import EtcdOptions
from cau_lab import etcd, hostcau
from cau_lab.access import clusters_toml_text
from cau_lab.config import LabConfig, LabError
from cau_lab.image import CLUSTER_PACKAGES

SU = LabConfig(
    state_dir=Path("/var/tmp/su"),
    name="caulabs",
    subnet="10.77.204.0/24",
    nodes=3,
    pacemaker=True,
    self_updating=True,
)
ENDPOINTS = [f"http://10.77.204.1{i}:2379" for i in (1, 2, 3)]


def test_self_updating_needs_pacemaker() -> None:
    with pytest.raises(LabError, match="needs pacemaker") as err:
        LabConfig(nodes=3, self_updating=True)
    assert err.value.hint is not None and "--pacemaker --self-updating" in err.value.hint


def test_self_updating_is_saved_with_the_lab(tmp_path: Path) -> None:
    cfg = LabConfig(state_dir=tmp_path, nodes=3, pacemaker=True, self_updating=True)
    cfg.save()
    assert json.loads(cfg.config_file.read_text())["self_updating"] is True
    assert LabConfig.load(tmp_path) == cfg
    # a lab.json written before the option existed reads as a lab without it
    data = cfg.to_json()
    del data["self_updating"]
    assert LabConfig.from_json(data).self_updating is False


def test_the_image_has_etcd_and_etcdctl() -> None:
    assert {"etcd-server", "etcd-client"} <= set(CLUSTER_PACKAGES)


def test_each_host_names_its_member_and_the_whole_cluster() -> None:
    env = dict(
        line.split("=", 1) for line in etcd.env_file(SU, "node2").splitlines() if line and line[0] != "#"
    )
    assert env == {
        "ETCD_NAME": "node2",
        "ETCD_DATA_DIR": "/var/lib/etcd/default",
        "ETCD_LISTEN_PEER_URLS": "http://10.77.204.12:2380",
        "ETCD_LISTEN_CLIENT_URLS": "http://10.77.204.12:2379,http://127.0.0.1:2379",
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": "http://10.77.204.12:2380",
        "ETCD_ADVERTISE_CLIENT_URLS": "http://10.77.204.12:2379",
        "ETCD_INITIAL_CLUSTER": ",".join(f"node{i}=http://10.77.204.1{i}:2380" for i in (1, 2, 3)),
        "ETCD_INITIAL_CLUSTER_STATE": "new",
        "ETCD_INITIAL_CLUSTER_TOKEN": "caulabs",
        "ETCD_HEARTBEAT_INTERVAL": "100",
        "ETCD_ELECTION_TIMEOUT": "1000",
    }
    assert SU.etcd_endpoints == ENDPOINTS


@pytest.mark.parametrize("on_host", [False, True])
def test_cau_configs_name_the_etcd_store_and_its_members(on_host: bool) -> None:
    text = clusters_toml_text(SU, on_host=on_host)
    data = tomllib.loads(text)
    config = CauConfig.model_validate(data)  # as cau reads it
    assert config.store.kind == "etcd"
    store = EtcdOptions.model_validate(config.store.options)
    assert store == EtcdOptions(endpoints=ENDPOINTS, prefix="/cau/")
    cluster = config.clusters["lab"]
    assert cluster.provider == "pacemaker" and cluster.store_members == ["node1", "node2", "node3"]
    assert [p.role for p in cluster.probes] == ["vm1", "web", "web-clone"]
    opts = cluster.options
    assert opts["nodes"] == [{"name": f"node{i}", "host": f"10.77.204.1{i}"} for i in (1, 2, 3)]
    if on_host:
        assert (opts["identity"], opts["known_hosts"]) == ("/etc/cau/id_ed25519", "/etc/cau/known_hosts")
        assert "cau --config /etc/cau/cau.toml status lab" in text
    else:
        assert opts["identity"] == "/var/tmp/su/id_ed25519"
        assert opts["known_hosts"] == "/var/tmp/su/known_hosts"
    assert 'options = { endpoints = ["http://10.77.204.11:2379", ' in text  # the documented form


def test_labs_without_self_updating_keep_their_config() -> None:
    for cfg in (LabConfig(nodes=4), LabConfig(nodes=3, pacemaker=True)):
        text = clusters_toml_text(cfg)
        assert "[store]" not in text and "store_members" not in text
        assert CauConfig.model_validate(tomllib.loads(text)).store.kind == "sqlite"


def test_the_wrapper_runs_the_installed_cau_with_the_hosts_python() -> None:
    assert hostcau.WRAPPER == "/usr/local/bin/cau"
    assert hostcau.WRAPPER_TEXT == '#!/bin/sh\nPYTHONPATH=/opt/cau/site exec /usr/bin/python3 -m cau "$@"\n'


def test_cau_is_built_from_this_checkout() -> None:
    root = hostcau.project_root()
    assert (root / "src" / "cau" / "__init__.py").is_file()
    assert tomllib.loads((root / "pyproject.toml").read_text())["project"]["name"] == "cau"


def test_a_cau_not_in_a_source_tree_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostcau.cau, "__file__", "/usr/lib/python3/dist-packages/cau/__init__.py")
    with pytest.raises(LabError, match="not in one") as err:
        hostcau.project_root()
    assert "/usr/lib/python3/dist-packages/cau" in err.value.message
    assert err.value.hint is not None and "editable" in err.value.hint


def test_hosts_whose_python_differs_from_this_one_are_refused(tmp_path: Path) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    python3 = tmp_path / "usr/bin/python3"
    os.symlink("python3.11", python3)
    hostcau.check_python(tmp_path)  # this suite runs on 3.11, as bookworm's hosts
    python3.unlink()
    os.symlink("python3.9", python3)
    with pytest.raises(LabError, match=r"hosts run python3\.9"):
        hostcau.check_python(tmp_path)


def test_the_plugins_compared_are_those_that_load_with_their_distribution_and_version() -> None:
    views = [
        {"kind": "plug-in", "name": "apt", "distribution": "cau", "version": "0.1.0", "ok": True},
        {"kind": "plug-in", "name": "broken", "distribution": "x", "version": "1", "ok": False},
    ]
    assert hostcau.installed(views) == {("plug-in", "apt", "cau", "0.1.0")}


def test_members_that_do_not_answer_are_named() -> None:
    # loopback addresses where nothing listens: refused at once
    cfg = LabConfig(nodes=2, pacemaker=True, self_updating=True, subnet="127.77.0.0/24")
    with pytest.raises(LabError, match=r"etcd members node1, node2 not healthy after 0.2 s") as err:
        etcd.wait_healthy(cfg, timeout=0.2)
    assert "http://127.77.0.11:2379/health" in err.value.message
    assert err.value.hint is not None and "/var/log/lab/etcd.log" in err.value.hint
