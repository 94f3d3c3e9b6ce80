"""The pages people see: plain HTML from Jinja2 templates (autoescaped), in the contact's or the
account's language where a template exists (``templates/<language>/<page>``), else English."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from babel.dates import format_date
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

__all__ = ["LANGUAGES", "TEMPLATES", "accepted_language", "error_page", "language_of", "page"]

TEMPLATES = Path(__file__).resolve().parent / "templates"
#: the languages a page can be shown in (a folder of templates each)
LANGUAGES = tuple(sorted(p.name for p in TEMPLATES.iterdir() if p.is_dir()))

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def language_of(*settings: Mapping[str, Any] | None) -> str:
    """The first ``language`` (or ``locale``) named in ``settings`` (a contact's preferences, an
    account's custom fields) that has templates, as its primary subtag (``de-AT`` -> ``de``); else ``en``."""
    for mapping in settings:
        for key in ("language", "locale", "lang"):
            value = (mapping or {}).get(key)
            if isinstance(value, str) and value.strip():
                primary = value.strip().replace("_", "-").split("-")[0].lower()
                if primary in LANGUAGES:
                    return primary
    return "en"


def page(name: str, *, lang: str = "en", status: int = 200, **context: Any) -> HTMLResponse:
    """The page ``name`` in ``lang`` (English where that language has no such template)."""
    template = _env.select_template([f"{lang}/{name}", f"en/{name}"])
    shown = template.name.split("/")[0] if template.name else "en"
    html = template.render(lang=shown, **context)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store", "X-Robots-Tag": "noindex"})


def accepted_language(request: Request) -> str:
    """The language the browser prefers most (``Accept-Language``) among those with templates,
    else ``en``: for pages shown before Retain knows whom a link is for."""
    preferred: list[tuple[float, int, str]] = []
    for i, part in enumerate(request.headers.get("accept-language", "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().split("-")[0].lower()
        if primary in LANGUAGES and quality > 0:
            preferred.append((-quality, i, primary))
    return min(preferred)[2] if preferred else "en"


def error_page(
    problem: str, *, lang: str = "en", status: int, day: date | None = None, detail: str | None = None
) -> HTMLResponse:
    """The page of a refused link or answer, in ``lang``: ``problem`` is ``invalid``, ``expired``
    (``day``: its last valid day), ``gone`` (the contact is no longer there), ``no_survey``,
    ``survey_expired`` or ``bad_answer`` (``detail``: what was wrong). Every one says nothing changed."""
    day_text = format_date(day, format="long", locale=lang) if day else None
    return page("error.html", lang=lang, status=status, problem=problem, day=day_text, detail=detail)
