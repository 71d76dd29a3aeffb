"""The examples in the repository are valid, and the broken one fails the way the README says."""

from __future__ import annotations

from pathlib import Path

import pytest

from cau.config import load_config
from cau.domain.profile import build_profile
from cau.errors import ProfileError
from cau.sandbox.spec import default_spec, load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_example_clusters_and_their_specs_and_profiles_load() -> None:
    loaded = load_config(EXAMPLES / "clusters.toml")
    assert set(loaded.names()) == {"faulty", "rack", "sandbox"}
    for name in ("faulty", "rack"):
        cfg = loaded.cluster(name)
        assert cfg.provider == "sandbox"
        load_spec(EXAMPLES / cfg.options["spec"])
        if cfg.profile is not None:
            build_profile(EXAMPLES / cfg.profile)


@pytest.mark.parametrize("name", ["monthly.toml", "parallel.toml", "faulty-demo.toml"])
def test_example_profiles_are_valid(name: str) -> None:
    build_profile(EXAMPLES / "profiles" / name)


def test_the_bad_profile_is_refused_with_key_and_file() -> None:
    with pytest.raises(ProfileError) as err:
        build_profile(EXAMPLES / "profiles" / "bad.toml")
    assert "bad.toml" in str(err.value) and "max_retries_per_node" in str(err.value)
    assert "failback: unknown option" in str(err.value)


def test_builtin_sandbox_has_what_the_issue_promises() -> None:
    spec = default_spec()
    assert len(spec.nodes) == 4
    assert {r.kind.value for r in spec.roles} == {"live", "failover", "clone", "pinned"}
    assert any(u.restart for u in spec.updates) and any(u.after for u in spec.updates)
