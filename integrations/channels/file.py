"""A channel that writes each message as one JSON line to a local file: for demos, development,
and teams that hand messages to another system by file. Repeats of a key are dropped."""

from __future__ import annotations

import contextlib
import fcntl
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from integrations.channels.base import Delivery, Receipt

__all__ = ["FileChannel"]


class FileChannel:
    """Appends ``{"key", "channel", "at", "payload"}`` lines to ``<folder>/<name>.jsonl``."""

    dedupes_by_key = True

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.path = folder / f"{name}.jsonl"
        self._keys: set[str] = set()
        self._read_up_to = 0  # bytes of the file whose keys are in _keys

    def _catch_up(self, fh: Any) -> None:
        """Read the keys of lines appended since the last look (by this or another process)."""
        fh.seek(0, 2)
        end = fh.tell()
        if end < self._read_up_to:  # the file was replaced: start over
            self._keys.clear()
            self._read_up_to = 0
        fh.seek(self._read_up_to)
        for line in fh:
            with contextlib.suppress(ValueError):
                self._keys.add(json.loads(line)["key"])
        self._read_up_to = fh.tell()

    async def send(self, delivery: Delivery) -> Receipt:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # several workers may append at once
            self._catch_up(fh)
            if delivery.key in self._keys:
                return Receipt(provider_id=delivery.key, detail="already written")
            record = {
                "key": delivery.key,
                "channel": delivery.channel,
                "at": datetime.now(UTC).isoformat(),
                "payload": delivery.payload,
            }
            fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            fh.flush()
            self._keys.add(delivery.key)
            self._read_up_to = fh.tell()
        return Receipt(provider_id=delivery.key)

    async def aclose(self) -> None:
        return None
