"""Run directories and the files in them, written so that a crash never leaves a torn file.

Every whole-file write goes to a temporary file in the same directory, is flushed and fsync'ed, and
is renamed over the target (rename is atomic on POSIX); the directory is fsync'ed too so the rename
itself survives a power cut. Metrics are JSON lines, appended and flushed one record at a time.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, IO

from mlscale.errors import MlscaleError, RunFailed


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` atomically: `write(f)` fills a temp file that then replaces `path`.

    Raises:
        RunFailed: the file system refused (full disk, read-only, no permission); `path` is
            left as it was.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; run files are ordinary readable files
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as err:
        raise RunFailed(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        if tmp is not None and Path(tmp).exists():
            Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_run_dir(out_dir: str | Path, name: str) -> Path:
    """Create `<out_dir>/<name>-<YYYYmmdd-HHMMSS>` (with -2, -3... if taken) and return it."""
    base = Path(out_dir) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        for i in range(1, 1000):
            path = base if i == 1 else base.with_name(f"{base.name}-{i}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as err:
        raise MlscaleError(f"cannot create run directory under {out_dir}: {err.strerror}") from None
    raise MlscaleError(f"too many runs named {base} in the same second")


class MetricsLog:
    """metrics.jsonl: one JSON object per line, appended and flushed as it is written."""

    def __init__(self, path: Path, keep_records: int | None = None):
        """Open for appending; with `keep_records`, first cut the file to that many records
        (a resumed run drops what was logged after its checkpoint)."""
        self.path = Path(path)
        self.n_records = 0
        if keep_records is not None and self.path.exists():
            lines = self.path.read_text().splitlines(keepends=True)[:keep_records]
            atomic_write_text(self.path, "".join(lines))
            self.n_records = len(lines)
        try:
            self._file = self.path.open("a")
        except OSError as err:
            raise RunFailed(f"cannot append to {self.path}: {err.strerror or err}") from None

    def write(self, record: dict) -> None:
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as err:
            raise RunFailed(f"cannot append to {self.path}: {err.strerror or err}") from None
        self.n_records += 1

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:  # the write that failed was reported already
            pass



def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
