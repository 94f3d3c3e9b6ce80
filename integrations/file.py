"""A channel that writes each message as one JSON line to a local file: for demos, development,
and teams that hand messages to another system by file. Repeats of a key are dropped."""

from __future__ import annotations

import fcntl
import json
from datetime import UTC, datetime
from pathlib import Path

from .base import Delivery, Receipt

__all__ = ["FileChannel"]


class FileChannel:
    """Appends ``{"key", "channel", "at", "payload"}`` lines to ``<folder>/<name>.jsonl``."""

    dedupes_by_key = True

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.path = folder / f"{name}.jsonl"

    async def send(self, delivery: Delivery) -> Receipt:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # several workers may append at once
            fh.seek(0)
            for line in fh:
                if f'"key": {json.dumps(delivery.key)}' in line:
                    return Receipt(provider_id=delivery.key, detail="already written")
            record = {
                "key": delivery.key,
                "channel": delivery.channel,
                "at": datetime.now(UTC).isoformat(),
                "payload": delivery.payload,
            }
            fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        return Receipt(provider_id=delivery.key)

    async def aclose(self) -> None:
        return None
