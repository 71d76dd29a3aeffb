"""The Updating Run Profile: CAU's defaults, validation that names key and file, overrides."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from cau.domain.durations import format_duration, parse_duration
from cau.domain.profile import (
    DrainPolicy,
    FailbackMode,
    MoveMethod,
    ProfileError,
    RunProfile,
    build_profile,
    default_max_failed_nodes,
)


def test_defaults_are_cau_defaults() -> None:
    p = RunProfile()
    assert p.max_retries_per_node == 3
    assert p.reboot_timeout == timedelta(minutes=15)
    assert p.failback_mode is FailbackMode.IMMEDIATE
    assert p.max_parallel_nodes == 1  # CAU is serial
    assert p.drain is DrainPolicy.ALWAYS and p.move is MoveMethod.LIVE
    assert p.stop_after is None and p.warn_after is None
    assert not p.require_all_nodes_online and not p.no_restart and not p.allow_nodes_in_maintenance


@pytest.mark.parametrize(("nodes", "expected"), [(1, 0), (2, 0), (3, 1), (4, 1), (6, 2), (16, 5)])
def test_default_failure_budget_is_about_a_third(nodes: int, expected: int) -> None:
    assert default_max_failed_nodes(nodes) == expected
    assert RunProfile().effective_max_failed(nodes) == expected
    assert RunProfile(max_failed_nodes=0).effective_max_failed(nodes) == 0


def test_profile_file_with_every_option(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text(
        """
max_retries_per_node = 5
max_failed_nodes = 2
require_all_nodes_online = true
reboot_timeout = "20m"
stop_after = "4h"
warn_after = "2h30m"
pre_update_script = "/srv/cau/pre.sh"
post_update_script = "/srv/cau/post.sh"
run_plugins_serially = true
stop_on_plugin_failure = true
separate_reboots = true
node_order = ["n3", "n1"]
failback_mode = "policy"
max_parallel_nodes = "auto"
drain = "when-restart-needed"
move = "save"
no_restart = true
allow_nodes_in_maintenance = true

[[plugins]]
name = "apt"
args = { origins = ["Debian-Security"] }

[[plugins]]
name = "hotfix"
"""
    )
    p = build_profile(f)
    assert p.max_retries_per_node == 5 and p.stop_after == timedelta(hours=4)
    assert p.warn_after == timedelta(hours=2, minutes=30)
    assert [x.name for x in p.plugins or []] == ["apt", "hotfix"]
    assert p.plugins and p.plugins[0].args == {"origins": ["Debian-Security"]}
    assert p.max_parallel_nodes == "auto" and p.move is MoveMethod.SAVE


def test_flags_override_the_file(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('max_retries_per_node = 5\nfailback_mode = "none"\n')
    p = build_profile(f, {"max_retries_per_node": 1, "failback_mode": None})
    assert p.max_retries_per_node == 1  # the flag wins
    assert p.failback_mode is FailbackMode.NONE  # an absent flag does not erase the file's value


def test_plugins_shorthand() -> None:
    p = build_profile(None, {"plugins": ["apt", "hotfix"]})
    assert [x.name for x in p.plugins or []] == ["apt", "hotfix"]


@pytest.mark.parametrize(
    ("content", "key", "fragment"),
    [
        ("max_retries_per_node = 65", "max_retries_per_node", "less than or equal to 64"),
        ("max_retry_per_node = 3", "max_retry_per_node", "unknown option"),
        ('failback_mode = "sometimes"', "failback_mode", "immediate"),
        ('reboot_timeout = "soon"', "reboot_timeout", "not a duration"),
        ("max_parallel_nodes = 0", "max_parallel_nodes", "at least 1"),
        ('warn_after = "2h"\nstop_after = "1h"', "(profile)", "warn_after must be shorter"),
        ('schedule = "weekly"', "schedule", "unknown option"),
        ('[[plugins]]\nname = "apt"\nargs = { password = "x" }', "plugins.0.args", "no credentials"),
        ('plugins = ["apt", "apt"]', "plugins", "listed twice"),
        ('node_order = ["a", "a"]', "node_order", "listed twice"),
    ],
)
def test_bad_profile_names_the_key_and_the_file(
    tmp_path: Path, content: str, key: str, fragment: str
) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(content + "\n")
    with pytest.raises(ProfileError) as err:
        build_profile(f)
    text = str(err.value)
    assert str(f) in text
    assert key in text and fragment in text


def test_bad_flag_names_the_flag() -> None:
    with pytest.raises(ProfileError, match=r"max_retries_per_node: .*\[from --max-retries-per-node\]"):
        build_profile(None, {"max_retries_per_node": 100})


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "broken.toml"
    f.write_text("max_retries_per_node = = 3")
    with pytest.raises(ProfileError, match="not valid TOML"):
        build_profile(f)
    with pytest.raises(ProfileError, match="cannot read"):
        build_profile(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("1h30m", 5400),
        ("2d", 172800),
        ("PT15M", 900),
        ("45s", 45),
        ("0", 0),
        ("1.5h", 5400),
    ],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "soon", "15x", "-5m", "1h 30", "m15"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("value", [15, "15", 1.5, "-5"])
def test_a_bare_number_is_refused_with_both_readings(value: object) -> None:
    # CAU's RebootTimeoutMinutes counts minutes; cau's durations once read 15 as seconds.
    with pytest.raises(ValueError, match="has no unit") as refused:
        parse_duration(value)
    assert "m for minutes" in str(refused.value) and "s for seconds" in str(refused.value)


def test_a_profile_with_a_bare_reboot_timeout_names_the_option(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("reboot_timeout = 15\n")
    with pytest.raises(ProfileError) as refused:
        build_profile(path)
    assert "reboot_timeout" in str(refused.value) and "15m for minutes" in str(refused.value)


def test_format_duration() -> None:
    assert format_duration(4.25) == "4.2s"
    assert format_duration(125) == "2m05s"
    assert format_duration(3720) == "1h02m"
    assert format_duration(None) == "-"


def test_profile_round_trips_through_json() -> None:
    p = build_profile(None, {"reboot_timeout": "20m", "stop_after": "3h", "max_parallel_nodes": "auto"})
    again = RunProfile.model_validate(p.model_dump(mode="json"))
    assert again == p
