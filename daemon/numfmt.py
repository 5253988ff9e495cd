"""Numbers in alert messages: fixed decimals, with a decimal comma in French."""

from __future__ import annotations


def fmt(value: float, digits: int, language: str = "en") -> str:
    """``value`` with ``digits`` decimals; French messages use a decimal comma."""
    text = f"{value:.{digits}f}"
    return text.replace(".", ",") if language == "fr" else text
