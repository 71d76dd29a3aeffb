"""A canary secret, declared in a secrets file and in cau's environment, and placed in a script's
environment, a plug-in argument and a probe URL, reaches the scripts that need it and appears
nowhere a viewer, a report or a log can show it: every output of the CLI and of a real `cau serve`
(as a viewer), every report format, the event stream, the server's log and every byte cau wrote
to its data folder are searched for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.integration.conftest import Cau
from tests.web.conftest import Server

pytestmark = pytest.mark.slow

CANARY = "cau-canary-7Q#x/p?w@rd"  # URL-unsafe characters on purpose
CANARY_ENV = "cau-canary-env-5f0e1d"
FORMS = (CANARY, quote(CANARY, safe=""), quote(CANARY), CANARY_ENV, "canary")


def _config(home: Path, out: Path) -> str:
    secrets = home / "demo.secrets"
    secrets.write_text(f"CANARY_PW='{CANARY}'\n")
    secrets.chmod(0o600)
    profile = home / "p.toml"
    profile.write_text(
        # The pre-script proves it got the secret (writes it where the test reads it), and also
        # prints it on stdout and stderr, as careless scripts do; the post-script fails saying it.
        f'pre_update_script = \'\'\'echo "pre: $CANARY_PW $CANARY_ENV"; echo "$CANARY_PW" >&2; '
        f"printf %s \"$CANARY_PW|$CANARY_ENV\" > {out}/$CAU_NODE.seen'''\n"
        "post_update_script = '''echo \"post failed: $CANARY_PW\" >&2; exit 3'''\n"
        "node_order = ['node1']\n"
        "max_retries_per_node = 0\n"  # the failing post-script is not retried (10 s apart)
        "[[plugins]]\n"
        'name = "sandbox"\n'
        f"args = {{ exclude = [{json.dumps(CANARY)}] }}\n"
    )
    return f"""
[clusters.demo]
provider = "sandbox"
profile = "{profile}"
[clusters.demo.options]
speed = 200
[clusters.demo.secrets]
file = "{secrets}"
env = ["CANARY_ENV"]
[[clusters.demo.probes]]
role = "web-vm"
targets = ["http://probe:{quote(CANARY, safe="")}@127.0.0.1:9/health"]
interval = "50ms"
"""


def _assert_clean(what: str, text: str | bytes) -> None:
    data = text if isinstance(text, bytes) else text.encode()
    for form in FORMS:
        assert form.encode() not in data, f"{what} shows the canary ({form!r})"


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_the_cli_passes_secrets_to_scripts_and_shows_them_nowhere(cau: Cau, tmp_path: Path) -> None:
    out = tmp_path / "seen"
    out.mkdir()
    (tmp_path / "clusters.toml").write_text(_config(tmp_path, out))
    os.environ["CANARY_ENV"] = CANARY_ENV
    try:
        ran = cau("run", "demo", "--output", "json", timeout=300)
        text_status = cau("status", "demo")
        shown: list[tuple[str, str]] = [
            ("cau run --output json", ran.stdout + ran.stderr),
            ("cau status", text_status.stdout + text_status.stderr),
        ]
        for args in (
            ("status", "demo", "--output", "json"),
            ("report", "demo", "--last", "--detailed"),
            ("report", "demo", "--last", "--format", "json", "--detailed"),
            ("report", "demo", "--last", "--format", "csv", "--detailed"),
            ("report", "demo", "--last", "--format", "html", "--detailed"),
            ("report", "demo", "--format", "csv", "--availability"),
            ("scan", "demo"),
        ):
            got = cau(*args)
            assert got.returncode in (0, 3), (args, got.stderr)
            shown.append((f"cau {' '.join(args)}", got.stdout + got.stderr))
        # the debug trace for support: every file of its zip (journal, report, config, log...)
        trace = cau("debug-trace", "demo", "-o", str(tmp_path / "trace.zip"))
        assert trace.returncode == 0, trace.stderr
        shown.append(("cau debug-trace", trace.stdout + trace.stderr))
        with zipfile.ZipFile(tmp_path / "trace.zip") as zf:
            members = {name: zf.read(name) for name in zf.namelist()}
        assert any(name.endswith("/run/journal.jsonl") for name in members)
        assert any(name.endswith("/coordinator/cau.log") for name in members)
        shown += [(f"debug trace: {name}", data.decode()) for name, data in members.items()]
    finally:
        del os.environ["CANARY_ENV"]
    report = json.loads(ran.stdout)
    # The scripts got both secrets, exactly: declared once, delivered as environment variables.
    seen = sorted(out.glob("*.seen"))
    assert seen and {p.read_text() for p in seen} == {f"{CANARY}|{CANARY_ENV}"}
    # ... and the run went through its steps (the post-script's failure is reported, masked).
    assert report["nodes"], report
    assert "***" in json.dumps(report)
    for what, text in shown:
        _assert_clean(what, text)
    for path in _files(tmp_path / "data"):  # the store (journal, run records, reports), its WAL
        _assert_clean(str(path), path.read_bytes())


def _get(server: Server, token: str, path: str) -> str:
    req = urllib.request.Request(server.url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return str(r.read().decode())
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read().decode()}"


def test_a_viewer_of_cau_serve_never_sees_the_canary(serve: Callable[..., Server], tmp_path: Path) -> None:
    out = tmp_path / "seen"
    out.mkdir()
    os.environ["CANARY_ENV"] = CANARY_ENV
    try:
        config = _config(tmp_path, out)
        server = serve(config, "--allow-local-scripts")  # the sandbox's scripts run here
    finally:
        del os.environ["CANARY_ENV"]
    # the server was started with the variable in its environment (serve copies os.environ)
    viewer = json.loads(
        server.cau("token", "create", "--role", "viewer", "--name", "eye", "--output", "json").stdout
    )["token"]

    # A profile holding a secret's value is refused (it would be masked wherever shown, and an
    # edit would save the mask back); one referring to it is stored, and viewers see no script.
    refused = urllib.request.Request(
        server.url + "/api/v1/profiles",
        data=json.dumps(
            {"name": "leaky", "description": "", "options": {"pre_update_script": f"mysql -p{CANARY}"}}
        ).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(refused, timeout=30)
    body = err.value.read().decode()
    assert err.value.code in (400, 422) and "secret" in body, body
    _assert_clean("the refusal", body)
    server.request(
        "POST",
        "/api/v1/profiles",
        {
            "name": "db",
            "description": "",
            "options": {
                "pre_update_script": 'mysql -p"$CANARY_PW" -e "SET GLOBAL read_only=1"',
                "plugins": [{"name": "sandbox", "args": {"exclude": ["{{secret:CANARY_PW}}"]}}],
            },
        },
    )
    as_viewer = json.loads(_get(server, viewer, "/api/v1/profiles/db"))
    assert "mysql" not in json.dumps(as_viewer) and "CANARY_PW" not in json.dumps(as_viewer)
    as_admin = server.request("GET", "/api/v1/profiles/db")
    assert as_admin["options"]["pre_update_script"].startswith("mysql")

    # A run through the API (the cluster's profile file: scripts, plug-in argument, probe URL).
    started = server.request("POST", "/api/v1/clusters/demo/runs", {"options": {}})
    run_id = started["run_id"]
    for _ in range(1200):
        if not server.request("GET", "/api/v1/runs?active=true"):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the run did not finish")
    seen = sorted(out.glob("*.seen"))
    assert seen and {p.read_text() for p in seen} == {f"{CANARY}|{CANARY_ENV}"}

    pages = [
        "/api/v1/runs",
        f"/api/v1/runs/{run_id}",
        f"/api/v1/runs/{run_id}/events",
        f"/api/v1/reports/{run_id}",
        "/api/v1/clusters/demo",
        "/api/v1/profiles",
        *(f"/api/v1/reports/{run_id}/export?format={f}" for f in ("text", "json", "csv", "html")),
        "/api/v1/export?format=csv",
    ]
    answers = {path: _get(server, viewer, path) for path in pages}
    assert "pre_update_script" in answers[f"/api/v1/runs/{run_id}/events"]  # the journal did stream
    for path, text in answers.items():
        assert not text.startswith("HTTP 5"), (path, text)
        _assert_clean(f"GET {path} as a viewer", text)
    log = server.stop()
    _assert_clean("the server's log", log)
    for path in _files(tmp_path / "data"):
        _assert_clean(str(path), path.read_bytes())


def test_a_short_or_exposed_secrets_file_is_refused_naming_it(cau: Cau, tmp_path: Path) -> None:
    secrets = tmp_path / "demo.secrets"
    secrets.write_text("DB_PW=hunter2-long-enough\n")
    secrets.chmod(0o644)
    (tmp_path / "clusters.toml").write_text(
        f'[clusters.demo]\nprovider = "sandbox"\n[clusters.demo.secrets]\nfile = "{secrets}"\n'
    )
    exposed = cau("run", "demo")
    assert exposed.returncode != 0
    assert f"secrets file {secrets} is readable or writable by others" in exposed.stderr
    assert f"chmod 600 {secrets}" in exposed.stderr
    secrets.chmod(0o600)
    secrets.write_text("DB_PW=abc\n")
    short = cau("run", "demo")
    assert short.returncode != 0 and "DB_PW shorter than 6 characters" in short.stderr
    assert "abc" not in short.stderr
    # nothing started
    assert json.loads(cau("status", "demo", "--output", "json").stdout)["run"] is None


def test_config_errors_never_print_a_url_password(cau: Cau, tmp_path: Path) -> None:
    (tmp_path / "clusters.toml").write_text(
        '[clusters.demo]\nprovider = "sandbox"\n[[clusters.demo.probes]]\nrole = "web-vm"\n'
        # as people do write them: the password not URL-encoded (`#`, `/`, `?` and `@` in it)
        f'targets = ["ftp://probe:{CANARY}@127.0.0.1:9/health"]\n'
    )
    got = subprocess.run(
        [sys.executable, "-m", "cau", "run", "demo"], env=cau.env, capture_output=True, text=True, timeout=60
    )
    assert got.returncode != 0 and "targets" in got.stderr, got.stderr
    _assert_clean("a config error", got.stdout + got.stderr)


def test_a_resumed_run_takes_the_secrets_from_the_configuration_again(cau: Cau, tmp_path: Path) -> None:
    """The run record holds `{{secret:NAME}}`, never the value: a coordinator killed mid-run and
    resumed by another process runs the same scripts with the real values again."""
    out = tmp_path / "seen"
    out.mkdir()
    secrets = tmp_path / "demo.secrets"
    secrets.write_text(f"CANARY_PW='{CANARY}'\n")
    secrets.chmod(0o600)
    (tmp_path / "p.toml").write_text(
        "pre_update_script = '''printf %s '{{secret:CANARY_PW}}|'\"$CANARY_PW\" > "
        f"{out}/$CAU_NODE.seen'''\n"
    )
    (tmp_path / "clusters.toml").write_text(
        f'[clusters.demo]\nprovider = "sandbox"\nprofile = "{tmp_path / "p.toml"}"\n'
        f'[clusters.demo.options]\nspeed = 200\n[clusters.demo.secrets]\nfile = "{secrets}"\n'
    )
    killed = subprocess.run(
        [sys.executable, "-m", "cau", "run", "demo"],
        env={**cau.env, "CAU_TEST_CRASH_AFTER": "outcome:enter_maintenance/1@node2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert len(list(out.glob("*.seen"))) < 4  # killed with nodes still to prepare
    resumed = cau("run", "demo", timeout=300)
    assert resumed.returncode == 0 and "resuming run" in resumed.stdout, resumed.stdout + resumed.stderr
    seen = {p.name: p.read_text() for p in out.glob("*.seen")}
    assert seen == {f"node{i}.seen": f"{CANARY}|{CANARY}" for i in range(1, 5)}
    for path in _files(tmp_path / "data"):
        _assert_clean(str(path), path.read_bytes())
