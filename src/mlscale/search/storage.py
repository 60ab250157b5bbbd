"""Where a study lives: an Optuna storage from a URL, with passwords kept out of every message.

- none given: a journal file in the study directory (Optuna's JournalStorage: an append-only log
  under a file lock; many local processes share it without SQLite's "database is locked");
- `sqlite:///FILE`: SQLite with a 60 s busy timeout (parallel writers wait instead of failing);
- `postgresql://USER:PASSWORD@HOST:PORT/DB`: PostgreSQL through psycopg 3 (`pip install
  'mlscale[postgres]'`), the way to share one study across machines;
- a path ending in `.log` or `.journal`: a journal file elsewhere (e.g. on a shared file system).

RDB storages run Optuna's heartbeat: a trial whose process dies without a word (SIGKILL, a lost
machine) is marked FAILED by the next trial any worker starts, instead of staying RUNNING forever.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from pathlib import Path

from mlscale.errors import MlscaleError

HEARTBEAT_S = 5  # a running trial's process writes a heartbeat this often (RDB storages)
GRACE_S = 30  # ... and is declared dead after this long without one
SQLITE_BUSY_TIMEOUT_S = 60
JOURNAL_NAME = "journal.log"


def mask_url(url: str | None) -> str:
    """`postgresql://u:secret@h/db` -> `postgresql://u:***@h/db`; anything else unchanged."""
    if not url:
        return ""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


def scrub(text: str, url: str | None) -> str:
    """`text` with the password of `url` (if any) replaced, for errors that quote the URL."""
    match = re.search(r"://[^:/@]*:([^@]*)@", url or "")
    return text.replace(match.group(1), "***") if match and match.group(1) else text


def is_local_journal(url: str | None) -> bool:
    return not url or not re.match(r"^[a-z][a-z0-9+]*://", url)


def journal_path(url: str | None, study_dir: Path) -> Path:
    return Path(url) if url else study_dir / JOURNAL_NAME


def open_storage(url: str | None, study_dir: Path, repair: bool = False):
    """The Optuna storage for `url` (None: the study directory's journal file); with `repair`, a
    journal's torn last line is cut first (the tuner does this once, before its workers start)."""
    import optuna

    try:
        if is_local_journal(url):
            path = journal_path(url, study_dir)
            if url and not path.name.endswith((".log", ".journal")):
                raise MlscaleError(f"--storage {url!r}: give sqlite:///FILE, postgresql://USER:PASSWORD@HOST/DB, "
                                   f"or a journal file ending in .log")
            path.parent.mkdir(parents=True, exist_ok=True)
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            if repair:
                repair_journal(path)

            return JournalStorage(JournalFileBackend(str(path)))
        if url.startswith("sqlite:"):
            return _rdb(url, engine_kwargs={"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}})
        if url.startswith(("postgresql:", "postgres:", "postgresql+")):
            driver_url = re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)  # psycopg 3, not psycopg2
            return _rdb(driver_url, engine_kwargs={"pool_pre_ping": True})
        raise MlscaleError(f"--storage {mask_url(url)}: unsupported; give sqlite:///FILE, "
                           f"postgresql://USER:PASSWORD@HOST/DB, or a journal file ending in .log")
    except MlscaleError:
        raise
    except ModuleNotFoundError as err:
        raise MlscaleError(f"storage {mask_url(url)} needs the '{err.name}' module: "
                           f"pip install 'mlscale[postgres]'") from None
    except Exception as err:  # noqa: BLE001 - a driver's error, quoted on one line without the password
        text = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", " ".join(str(err).split()))[:300]
        raise MlscaleError(f"cannot open storage {mask_url(url)}: {scrub(text, url)}") from None


def _rdb(url: str, engine_kwargs: dict, attempts: int = 5):
    """Optuna's RDBStorage with a heartbeat. Tuners that start together on an empty database race
    to create Optuna's tables (PostgreSQL: a duplicate-key error from `CREATE TYPE`, found by the
    two-tuner test); the loser retries, and then finds the tables made."""
    import optuna
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S,
                                                  grace_period=GRACE_S)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def repair_journal(path: Path) -> None:
    """Cut a journal's torn last line (a writer killed mid-append) so appends go on cleanly.

    Optuna ignores a torn *last* line, but the next append would bury it mid-file, where it is
    an error. Done under the journal's own lock (the one Optuna's appends take), so a line another
    process is appending right now is never mistaken for a torn one."""
    from optuna.storages.journal import JournalFileSymlinkLock

    if not path.exists() or path.stat().st_size == 0:
        return
    lock = JournalFileSymlinkLock(str(path))  # a lock left by a killed writer is broken after 30 s
    lock.acquire()
    try:
        _cut_torn_tail(path)
    finally:
        lock.release()


def _cut_torn_tail(path: Path) -> None:
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        data_end = f.seek(0, os.SEEK_END)
        keep = max(0, data_end - 1)
        while keep > 0:  # back to the last newline
            f.seek(keep - 1)
            if f.read(1) == b"\n":
                break
            keep -= 1
        f.truncate(keep)
