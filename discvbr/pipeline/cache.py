"""Resumable steps: a step is skipped when its inputs and parameters are unchanged.

Each completed step leaves a record ``<folder>/.steps/<name>.json`` holding a key (a
hash of its parameters and of its input files' contents) and the outputs it wrote. The
record is written last, after every output has been renamed into place, so a step killed
half-way has no record and is redone; a record whose key or outputs do not match is
ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from discvbr.io import write_json

__all__ = ["file_digest", "Step"]

_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's contents (memoised on path, size and modification time)."""
    path = Path(path)
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[memo] = digest.hexdigest()
    return _DIGESTS[memo]


@dataclass
class Step:
    """One resumable unit of work.

    Parameters
    ----------
    name : str
        Unique within ``folder`` (e.g. ``"register-L4L5"``).
    folder : Path
        Where the step's record lives (its outputs usually live there too).
    params : dict
        JSON-serialisable parameters that change the result.
    inputs : iterable of path
        Files the result depends on (contents are hashed).
    """

    name: str
    folder: Path
    params: dict = field(default_factory=dict)
    inputs: Iterable[str | os.PathLike] = ()
    _started: float = field(default=0.0, init=False, repr=False)

    @property
    def record_path(self) -> Path:
        return Path(self.folder) / ".steps" / f"{self.name}.json"

    @property
    def key(self) -> str:
        blob = json.dumps(
            {"params": self.params, "inputs": sorted(file_digest(p) for p in self.inputs)},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def done(self) -> bool:
        """True when a matching record exists and all its outputs are present."""
        try:
            record = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return False
        if record.get("key") != self.key:
            return False
        return all((Path(self.folder) / p).exists() for p in record.get("outputs", []))

    def start(self) -> None:
        self._started = time.perf_counter()

    def finish(self, outputs: Iterable[str | os.PathLike], *, seconds: float | None = None, **extra: object) -> None:
        """Record completion; ``outputs`` are paths as written (absolute or relative to the
        working directory), stored relative to the folder so that the record stays valid
        from any working directory and when the output folder moves.

        ``seconds`` is the step's duration when it was not timed from :meth:`start`.
        """
        if seconds is None and self._started:
            seconds = time.perf_counter() - self._started
        folder = Path(self.folder).resolve()
        relative = [Path(os.path.relpath(Path(p).resolve(), folder)).as_posix() for p in outputs]
        write_json(self.record_path, {
            "step": self.name,
            "key": self.key,
            "outputs": relative,
            "seconds": None if seconds is None else round(seconds, 3),
            **extra,
        })

    def record(self) -> dict:
        """The stored record (empty when there is none)."""
        try:
            return json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return {}
