"""Money and ratios as people read them: the one formatter of reports, summaries and the CLI.

Babel (CLDR data) knows every currency's minor digits and symbol, so no table of currencies is kept
here. Amounts are never converted between currencies; a figure with a currency says which.
"""

from __future__ import annotations

from decimal import Decimal

from babel.numbers import format_currency, format_decimal, format_percent

__all__ = ["amount", "money", "percent", "points"]

#: figures are written the English way (1,234.50), whatever the machine's locale
LOCALE = "en_US"
NOT_AVAILABLE = "n/a"


def money(cents: int | None, currency: str | None = None) -> str:
    """Cents as an amount with two decimals and separators: ``171000`` -> ``1,710.00``; with a
    currency, its ISO code follows (``1,710.00 USD``) and the currency's own decimals are used
    (``1,710 JPY``). ``None`` is ``n/a``."""
    if cents is None:
        return NOT_AVAILABLE
    value = Decimal(int(cents)) / 100
    if not currency:
        return format_decimal(value, format="#,##0.00", locale=LOCALE)
    return format_currency(value, currency.upper(), format="#,##0.00 ¤¤", locale=LOCALE)


def amount(value: float | Decimal | int | None, currency: str | None = None, *, symbol: bool = False) -> str:
    """An amount in whole units (an account's ARR): no decimals when it is whole (``12,000``),
    else two (``120,000.50``); the currency's code after it (``12,000 USD``), or with ``symbol``
    its sign before it (``$12,000``, ``€9,500``, ``CA$1,200``). ``None`` is the empty string."""
    if value is None:
        return ""
    number = Decimal(str(value))
    digits = "#,##0" if number == number.to_integral_value() else "#,##0.00"
    if not currency and not symbol:
        return format_decimal(number, format=digits, locale=LOCALE)
    code = (currency or "USD").upper()
    pattern = f"¤{digits}" if symbol else f"{digits} ¤¤"
    return format_currency(number, code, format=pattern, locale=LOCALE, currency_digits=False)


def percent(ratio: float | None, digits: int = 1) -> str:
    """A ratio in percent: ``0.737`` -> ``73.7%`` (``digits`` decimals). ``None`` is ``n/a``."""
    if ratio is None:
        return NOT_AVAILABLE
    pattern = "#,##0" + ("." + "0" * digits if digits else "") + "%"
    return format_percent(ratio, format=pattern, locale=LOCALE)


def points(ratio: float | None) -> str:
    """A difference of two ratios in percentage points, signed: ``0.042`` -> ``+4.2``."""
    if ratio is None:
        return NOT_AVAILABLE
    return format_decimal(Decimal(str(ratio)) * 100, format="+#,##0.0;-#,##0.0", locale=LOCALE)
