"""Secrets in script output never reach the journal or reports."""

from __future__ import annotations

import json
from pathlib import Path

from cau.redact import redact, tail
from tests.support import run_cluster, spec, write_cluster


def test_redact_common_secret_shapes() -> None:
    text = (
        "password=hunter2 API_KEY: abc123 token='t0k3n' Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.x.y "
        "url=https://admin:s3cret@repo.example/debian "
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAB3\n-----END OPENSSH PRIVATE KEY-----"
    )
    out = redact(text)
    for secret in ("hunter2", "abc123", "t0k3n", "eyJhbGciOiJIUzI1NiJ9", "s3cret", "AAAAB3"):
        assert secret not in out, secret
    assert "password=***" in out and "admin:***@repo.example" in out


def test_tail_keeps_the_end() -> None:
    assert tail("x" * 5000 + "the error", 100).endswith("the error")


def test_script_output_with_a_secret_is_redacted_in_journal_and_report(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec(3))
    done = run_cluster(
        tmp_path, config, pre_update_script="echo 'db_password=Sup3rS3cret'; echo token=XYZ987 >&2"
    )
    assert done.report.status == "Succeeded"
    journal = json.dumps([e.model_dump(mode="json") for e in done.events])
    assert "Sup3rS3cret" not in journal and "XYZ987" not in journal
    assert "db_password=***" in journal
    assert "Sup3rS3cret" not in done.report.model_dump_json()
