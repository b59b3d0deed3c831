"""One run at a time per output folder: a lock file holding the owner's process id.

Two runs writing into one folder would both do every step and interleave their logs,
so a run takes ``<out>/.discvbr.lock`` (created exclusively, with the owner's pid, host
and start time) and removes it when it ends, however it ends. A second run finds the
file and refuses. A lock left by a process that no longer exists on this host (a run
killed with SIGKILL, a power cut) is stale: it is taken over with a log line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Iterator

from discvbr.errors import DiscVBRError
from discvbr.provenance import now

__all__ = ["LOCK_NAME", "output_lock"]

LOCK_NAME = ".discvbr.lock"

log = logging.getLogger("discvbr.pipeline")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _read_owner(path: Path) -> dict:
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _stale(owner: dict) -> bool:
    """True when the lock's owner is known to be gone: same host and no such process.

    A lock written half-way (empty or unreadable) is not stale, since its owner may be
    writing it right now; the message tells the user how to remove it.
    """
    pid = owner.get("pid")
    if not isinstance(pid, int) or owner.get("host") != socket.gethostname():
        return False
    return pid != os.getpid() and not _process_alive(pid)


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, *, command: str) -> Iterator[Path]:
    """Hold the lock of ``folder`` for the duration of the ``with`` block.

    Parameters
    ----------
    folder : path-like
        The output folder (must exist).
    command : str
        What holds it (``"discvbr run"``), written into the lock for the refusal message.

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    DiscVBRError
        When another live process holds the folder: naming its pid, host, command and
        start time, and the file to remove if that process is known to be gone.
    """
    path = Path(folder) / LOCK_NAME
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "started": now()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_owner(path)
            if _stale(holder):
                log.warning("removing a stale lock of %s: process %s is gone", folder, holder.get("pid"))
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            who = (f"{holder.get('command', 'discvbr')} (pid {holder.get('pid')} on {holder.get('host')}, "
                   f"started {holder.get('started')})") if holder else "another discvbr process"
            raise DiscVBRError(
                f"output folder {folder} is in use by {who}; wait for it to finish, or use another --out. "
                f"If that process is gone, remove {path}"
            ) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(owner) + "\n")
        break
    else:
        raise DiscVBRError(f"output folder {folder}: could not take the lock {path}; remove it if no run is using the folder")
    try:
        yield path
    finally:
        if _read_owner(path).get("pid") == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
