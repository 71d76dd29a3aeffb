"""The coordinator's own log file: what the long-lived commands (`cau run`, `cau daemon`,
`cau serve`) log, kept in `<data_dir>/logs/cau.log` (rotated at 2 MB, 3 old files kept), for
`cau debug-trace` to hand to support.

Every line is masked by the same rules as everything cau writes (cau.redact: the secrets'
values, and what looks like a password, token or key). `CAU_LOG_FILE=off` turns the file off;
`CAU_LOG_FILE=/some/path` puts it elsewhere. A log file that cannot be opened never stops a
command: it is said once on stderr and the command goes on without it.
"""

from __future__ import annotations

import logging
import os
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

from cau import __version__
from cau.redact import redact

MAX_BYTES = 2 * 1024 * 1024
BACKUPS = 3
_FORMAT = "%(asctime)s %(levelname)s %(name)s [pid %(process)d] %(message)s"

log = logging.getLogger("cau")

_handler: RotatingFileHandler | None = None
_stderr: logging.Handler | None = None


def log_path(data_dir: Path) -> Path | None:
    """Where the log file is (None: turned off with CAU_LOG_FILE=off)."""
    chosen = os.environ.get("CAU_LOG_FILE", "").strip()
    if chosen.lower() in ("off", "none", "0", "false"):
        return None
    return Path(chosen) if chosen else data_dir / "logs" / "cau.log"


class _Masking(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def start_log_file(data_dir: Path, command: str) -> Path | None:
    """Log cau's records (INFO and up) to the log file from now on, in this process; returns
    its path (None when turned off or it cannot be opened). Warnings still reach stderr."""
    global _handler, _stderr
    path = log_path(data_dir)
    if path is None:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handler = RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
        os.chmod(path, 0o600)
    except OSError as exc:
        print(f"cau: no log file ({path}: {exc.strerror or exc}); going on without it", file=sys.stderr)
        return None
    handler.setFormatter(_Masking(_FORMAT))
    handler.setLevel(logging.INFO)
    if _handler is not None:  # started again in this process (tests): one file at a time
        log.removeHandler(_handler)
        _handler.close()
    _handler = handler
    log.addHandler(handler)
    if _stderr is None and not logging.getLogger().handlers:
        # With a handler of its own, cau's warnings would no longer reach stderr through
        # logging's last resort: keep them there, as before.
        _stderr = logging.StreamHandler()
        _stderr.setLevel(logging.WARNING)
        _stderr.setFormatter(_Masking("%(message)s"))
        log.addHandler(_stderr)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    log.info("%s started (cau %s, Python %s)", command, __version__, sys.version.split()[0])
    return path


def stop_log_file() -> None:
    """Stop writing the log file (and the stderr handler that came with it), in this process."""
    global _handler, _stderr
    for handler in (_handler, _stderr):
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
    _handler = _stderr = None


def tail(path: Path, limit: int = 512 * 1024) -> str:
    """The last `limit` bytes of a log file, from its first whole line."""
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - limit))
        data = f.read()
    if size > limit:
        data = data.split(b"\n", 1)[-1]
    return data.decode("utf-8", errors="replace")
