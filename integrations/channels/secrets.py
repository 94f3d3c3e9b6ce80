"""Secrets: resolved at send time, only where a playbook author wrote a secret reference; never
rendered into stored touches, logs or errors.

Templates see ``secrets.<name>``. While a touch is written, each reference renders as a marker
that carries a random token of that render (:class:`SecretMarkers`); right after the render,
:func:`seal` turns the output into *sealed text*, a JSON object in the touch's payload::

    {"$text": ["https://", {"$secret": "crm_webhook_url"}, "/renewals"]}

and any output without that token stays a plain string. Customer data may hold any text
(``⟦secret:partner_key⟧`` included), but it cannot know a render's token and a string cannot
become an object, so customer text never names a secret. At send time :func:`resolve_secrets`
joins sealed text with the secrets' values and leaves every string as it is.

Values come from the environment (``RETAIN_SECRET_<NAME>``) or, failing that, from a Prefect
Secret block named ``retain-<name>`` (with ``-`` for ``_``).

:func:`redact` is the one redaction step for everything stored or printed about a failure: the
values of configured secrets, credential-looking fields (``api_key``, ``token``, ``password``,
``secret``, ``authorization``, signed-URL parameters such as ``sig`` and ``signature``) and the
user:password of URLs are replaced by ``[redacted]``, and the text is bounded.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any, cast
from urllib.parse import quote, urlsplit

from pydantic import SecretStr

from models import ConfigError, TemplateError

__all__ = [
    "MAX_STORED_BODY",
    "MAX_STORED_MESSAGE",
    "REDACTED",
    "SEALED",
    "SECRET",
    "SecretMarkers",
    "is_sealed",
    "redact",
    "resolve_secret",
    "resolve_secrets",
    "seal",
    "secret_names",
]

#: the key of sealed text, and of a secret reference inside it
SEALED = "$text"
SECRET = "$secret"
#: what a redacted value becomes
REDACTED = "[redacted]"
#: a vendor's error body, as stored (after redaction)
MAX_STORED_BODY = 500
#: a failure's message, as stored on a touch or the timeline (after redaction)
MAX_STORED_MESSAGE = 1_000

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SecretMarkers:
    """The ``secrets`` template variable while touches are written: each attribute is a marker
    holding this render's random token. Nothing else is public: ``secrets.<anything>`` is a secret."""

    def __init__(self) -> None:
        self._drawn: str | None = None  # drawn when a template first names a secret (most never do)

    @property
    def _token(self) -> str:
        if self._drawn is None:
            # digits only: upper(), title() and friends leave them alone, so a changed marker is still found
            self._drawn = f"{secrets.randbelow(10**24):024d}"
        return self._drawn

    def __getattr__(self, name: str) -> str:
        if name.startswith("_") or not _NAME.fullmatch(name):
            raise AttributeError(name)
        return f"⟦secret:{name}:{self._token}⟧"

    def __getitem__(self, name: str) -> str:
        return self.__getattr__(name)


def seal(text: str, markers: SecretMarkers) -> str | dict[str, list[Any]]:
    """``text`` as rendered with ``markers``: a plain string, or sealed text if it holds references."""
    if markers._drawn is None:  # no secret was named: no marker can be in the text
        return text
    token = markers._token
    if token not in text:
        return text
    parts: list[Any] = []
    at = 0
    for found in re.finditer(rf"⟦secret:({_NAME.pattern}):{token}⟧", text):
        if found.start() > at:
            parts.append(text[at : found.start()])
        parts.append({SECRET: found.group(1)})
        at = found.end()
    if at < len(text):
        parts.append(text[at:])
    if any(isinstance(p, str) and token in p for p in parts):
        raise TemplateError(
            "template failed to render: a secret reference was changed (by a filter, a slice, ...): "
            "print it as it is, {{ secrets.<name> }}; a secret's value is only known when the message leaves"
        )
    return {SEALED: parts}


def is_sealed(value: Any) -> bool:
    """Whether ``value`` is sealed text (see the module docstring)."""
    return isinstance(value, dict) and list(value) == [SEALED] and isinstance(value[SEALED], list)


#: False in a run that must not touch Prefect (``retain run --no-prefect``): looking up a block
#: would start Prefect's temporary server just to find nothing
PREFECT_BLOCKS: ContextVar[bool] = ContextVar("retain_prefect_blocks", default=True)


def resolve_secret(name: str) -> str:
    """The value of secret ``name``; a :class:`ConfigError` names where it was looked for."""
    env_name = f"RETAIN_SECRET_{name.upper()}"
    value = os.environ.get(env_name)
    if value:
        return value
    block = f"retain-{name.replace('_', '-')}"
    if not PREFECT_BLOCKS.get():
        raise ConfigError(
            f"secret {name!r} is not set: set {env_name} (Prefect Secret blocks are not read without Prefect)"
        )
    if not _prefect_server_configured():
        raise ConfigError(
            f"secret {name!r} is not set: set {env_name}, or create the Prefect Secret block {block!r} on the "
            "Prefect server PREFECT_API_URL names (none is configured, so no block was read)"
        )
    try:
        from prefect.blocks.system import Secret

        # _sync=True: Prefect's sync/async dispatch keyword, which load()'s typed signature leaves out
        loaded = cast("Secret[Any]", Secret.load(block, _sync=True))  # type: ignore[call-arg]
        found = str(loaded.get())
        _resolved.add(found)  # so that redact() knows it
        return found
    except Exception:  # no Prefect API, no such block: report both places below
        pass
    raise ConfigError(f"secret {name!r} is not set: set {env_name} or create the Prefect Secret block {block!r}")


#: set by a run that started Prefect's temporary server for itself (flows.orchestration.runtime):
#: its blocks (kept under PREFECT_HOME) are read through it
_temporary_server: list[bool] = []


def note_temporary_prefect_server() -> None:
    """This process started Prefect's temporary server: Secret blocks are read through it."""
    _temporary_server.append(True)


def _prefect_server_configured() -> bool:
    """Blocks live on a Prefect server (or the temporary one a Retain run started); without either,
    looking would start Prefect's temporary server just to find nothing (half a minute on a busy
    machine)."""
    from prefect.settings import PREFECT_API_URL

    return bool(_temporary_server) or bool(PREFECT_API_URL.value())


def secret_names(value: Any) -> set[str]:
    """The secrets a rendered payload refers to (in its sealed text only)."""
    if is_sealed(value):
        return {p[SECRET] for p in value[SEALED] if isinstance(p, dict) and isinstance(p.get(SECRET), str)}
    if isinstance(value, dict):
        return set().union(*(secret_names(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(secret_names(v) for v in value)) if value else set()
    return set()


def resolve_secrets(value: Any, lookup: Callable[[str], str] = resolve_secret) -> Any:
    """A copy of ``value`` with every sealed text joined with its secrets' values. Strings are left
    as they are, whatever they hold: only sealed text names a secret."""
    if is_sealed(value):
        out: list[str] = []
        for part in value[SEALED]:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict) and isinstance(part.get(SECRET), str) and _NAME.fullmatch(part[SECRET]):
                out.append(lookup(part[SECRET]))
            else:
                raise ConfigError(
                    f"a sealed text holds something that is neither text nor a secret: {type(part).__name__}"
                )
        return "".join(out)
    if isinstance(value, dict):
        return {k: resolve_secrets(v, lookup) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_secrets(v, lookup) for v in value]
    return value


# --- redaction ------------------------------------------------------------------------------------

_resolved: set[str] = set()  # values this process looked up (Prefect blocks are not in the environment)

#: names of fields whose value is a credential, in JSON, form bodies, headers and URL queries
_CREDENTIAL_NAMES = (
    r"[A-Za-z0-9_.-]*?(?:api[_-]?key|apikey|access[_-]?key|secret|token|password|passwd|pwd|credential"
    r"|signature|private[_-]?key|session[_-]?id)[A-Za-z0-9_-]*"
    r"|sig|key|auth|authorization|cookie|set-cookie"
)
_CREDENTIAL_FIELD = re.compile(
    rf"""(?P<key>(?P<q>["']?)\b(?:{_CREDENTIAL_NAMES})(?P=q))(?P<sep>\s*[:=]\s*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'[^']*'|(?:(?:bearer|basic|digest|token)\s+)?[^\s,;&"'<>{}\[\]]+)""",
    re.IGNORECASE,
)
_AUTH_SCHEME = re.compile(r"\b(Bearer|Basic|Digest)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@:]*:[^\s/@]*@")


def _field(found: re.Match[str]) -> str:
    value = found.group("value")
    quoted = value[0] if value[0] in "\"'" else ""
    return f"{found.group('key')}{found.group('sep')}{quoted}{REDACTED}{quoted}"


def _configured_values() -> Iterable[str]:
    """The values Retain holds as secrets: ``RETAIN_SECRET_*`` (and any ``RETAIN_`` variable named
    like a secret, token, password or key), its settings' secret fields (and the password inside
    the SMTP URL), and what this process resolved."""
    from models import Settings

    yield from (
        value
        for name, value in os.environ.items()
        if name.startswith("RETAIN_") and any(w in name for w in ("SECRET", "TOKEN", "PASSWORD", "KEY"))
    )
    yield from _resolved
    try:
        settings = Settings()
    except Exception:  # settings that do not validate hold nothing we could name here
        return
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
            yield text
            try:
                password = urlsplit(text).password
            except ValueError:
                password = None
            if password:
                yield password


def redact(text: str, *, limit: int | None = MAX_STORED_MESSAGE) -> str:
    """``text`` without configured secret values, credential-looking fields, ``Authorization``
    schemes' credentials and URLs' user:password, cut to ``limit`` characters (after redaction, so
    a cut never leaves half a secret)."""
    out = text
    values = {v for v in _configured_values() if len(v) >= 4}  # shorter would blank ordinary words
    for value in sorted(values, key=len, reverse=True):
        for form in (value, quote(value, safe=""), quote(value), json.dumps(value)[1:-1]):
            out = out.replace(form, REDACTED)
    out = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", out)
    out = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", out)
    out = _CREDENTIAL_FIELD.sub(_field, out)
    if limit is not None and len(out) > limit:
        out = out[:limit] + "…"
    return out
