"""A small recent ``request_id -> request day`` map shared by the gateway's worker processes.

A late label must be written to the ``labels`` partition of the day its *request*
was served. The feedback call may reach another worker than the prediction did,
so the map lives in a memory-mapped file that every worker of one gateway opens
(``<state_dir>/request_dates.bin``): a write by one worker is visible to the
others at once, without a lock server.

It is a cache, not a database: a fixed number of slots (``capacity``, 16 bytes
each: a 12-byte BLAKE2b digest of ``project/model/request_id`` and the day as a
4-byte day number), arranged in 4-way sets. A new id evicts a pseudo-random
entry of its set when the set is full, so roughly the last ``capacity`` requests
are remembered. A miss is answered by the caller (the feedback's
``request_date`` field, or a look-up in ``inference_logs``).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import mmap
import os
import struct
from pathlib import Path

_MAGIC = b"MMSRQD01"
_HEADER = 16  # magic + capacity (uint64)
_SLOT = 16
_WAYS = 4
_DIGEST = 12
_EPOCH = dt.date(1970, 1, 1)
_DAY = struct.Struct("<I")


class RequestDates:
    """Shared, fixed-size map of recent request ids to the UTC day they were served.

    Args:
        path: The map file; created (zero-filled) when missing.
        capacity: Slots in a new file (rounded up to a multiple of 4); an existing file keeps its own.
    """

    def __init__(self, path: str | os.PathLike[str], capacity: int = 1 << 20) -> None:
        if capacity < _WAYS:
            raise ValueError(f"capacity must be at least {_WAYS}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        capacity = -(-capacity // _WAYS) * _WAYS
        size = _HEADER + capacity * _SLOT
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # Workers start together: one creates the file while the others wait for its header.
            fcntl.flock(fd, fcntl.LOCK_EX)
            existing = os.fstat(fd).st_size
            if existing == 0:
                os.ftruncate(fd, size)
                os.pwrite(fd, _MAGIC + struct.pack("<Q", capacity), 0)
            else:
                header = os.pread(fd, _HEADER, 0)
                if len(header) < _HEADER or header[:8] != _MAGIC:
                    raise ValueError(f"{self.path} is not a request-date map")
                capacity = struct.unpack("<Q", header[8:])[0]
                size = _HEADER + capacity * _SLOT
                if existing < size:
                    raise ValueError(f"{self.path} is truncated")
            self._map = mmap.mmap(fd, size)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        self.capacity = capacity
        self._sets = capacity // _WAYS

    def close(self) -> None:
        """Unmap the file."""
        self._map.close()

    @staticmethod
    def _digest(project: str, model: str, request_id: str) -> bytes:
        key = f"{project}\x00{model}\x00{request_id}".encode()
        return hashlib.blake2b(key, digest_size=_DIGEST + 4).digest()

    def put(self, project: str, model: str, request_id: str, day: dt.date) -> None:
        """Remember that ``request_id`` of ``project/model`` was served on ``day`` (UTC)."""
        digest = self._digest(project, model, request_id)
        key, spread = digest[:_DIGEST], int.from_bytes(digest[_DIGEST:], "little")
        base = _HEADER + (int.from_bytes(key[:8], "little") % self._sets) * _WAYS * _SLOT
        value = _DAY.pack((day - _EPOCH).days + 1)  # 0 marks an empty slot
        target = None
        for way in range(_WAYS):
            offset = base + way * _SLOT
            stored = self._map[offset : offset + _DIGEST]
            if stored == key:
                target = offset
                break
            if target is None and self._map[offset + _DIGEST : offset + _SLOT] == b"\0\0\0\0":
                target = offset
        if target is None:
            target = base + (spread % _WAYS) * _SLOT
        self._map[target : target + _SLOT] = key + value

    def get(self, project: str, model: str, request_id: str) -> dt.date | None:
        """The day ``request_id`` was served, or ``None`` if it is not (or no longer) remembered."""
        key = self._digest(project, model, request_id)[:_DIGEST]
        base = _HEADER + (int.from_bytes(key[:8], "little") % self._sets) * _WAYS * _SLOT
        for way in range(_WAYS):
            offset = base + way * _SLOT
            if self._map[offset : offset + _DIGEST] == key:
                days = _DAY.unpack_from(self._map, offset + _DIGEST)[0]
                return _EPOCH + dt.timedelta(days=days - 1) if days else None
        return None
