"""Where Retain keeps its data and finds its playbooks. Read from the environment (``RETAIN_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["BUNDLED_PLAYBOOKS_DIR", "Settings", "get_settings"]

#: the playbooks shipped with Retain (the ``playbooks`` package's own folder)
BUNDLED_PLAYBOOKS_DIR = Path(__file__).resolve().parent.parent / "playbooks"


class Settings(BaseSettings):
    """Retain's settings. Every field can be set as ``RETAIN_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="RETAIN_", extra="ignore")

    database_url: str = "sqlite:///retain.db"
    #: the playbooks folder; by default ``./playbooks`` when it exists, else the bundled playbooks
    playbooks_dir: Path | None = None
    #: where the local file channel writes messages of channels that are not configured
    outbox_dir: Path = Path("retain-outbox")
    #: HMAC key that signs every webhook body (X-Retain-Signature)
    webhook_signing_secret: SecretStr | None = None

    def resolved_playbooks_dir(self) -> Path:
        if self.playbooks_dir is not None:
            return self.playbooks_dir
        local = Path("playbooks")
        if local.is_dir() and any(local.glob("*.y*ml")):
            return local
        return BUNDLED_PLAYBOOKS_DIR


def get_settings() -> Settings:
    return Settings()
