"""Numbers in alert messages."""

from __future__ import annotations

from daemon.numfmt import fmt


def test_fixed_decimals_and_a_decimal_comma_in_french() -> None:
    assert fmt(38.46, 1) == "38.5"
    assert fmt(38.46, 1, "fr") == "38,5"
    assert fmt(92.4, 0, "fr") == "92"
    assert fmt(9.0, 2, "en") == "9.00"
