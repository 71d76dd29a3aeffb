"""`./dev test` (and so CI) fails a test skipped for a missing dependency instead of passing it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pytest(tmp_path: Path, no_skips: bool) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_needs_sshd.py"
    test.write_text(
        "import pytest\n\n\ndef test_needs_sshd():\n    pytest.skip('needs root and openssh-server (sshd)')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CAU_TEST_NO_SKIPS"}
    if no_skips:
        env["CAU_TEST_NO_SKIPS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider", str(test)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_skip_fails_under_dev_test(tmp_path: Path) -> None:
    strict = _pytest(tmp_path, no_skips=True)
    assert strict.returncode == 1, strict.stdout
    assert "1 failed" in strict.stdout and "needs root and openssh-server" in strict.stdout
    relaxed = _pytest(tmp_path, no_skips=False)  # a developer's own pytest run may skip
    assert relaxed.returncode == 0 and "1 skipped" in relaxed.stdout, relaxed.stdout


def test_dev_test_sets_it_and_ci_runs_dev_test() -> None:
    assert "export CAU_TEST_NO_SKIPS=1" in (ROOT / "dev").read_text()
    assert "exec ./dev test" in (ROOT / ".ci" / "run").read_text()
