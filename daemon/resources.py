"""Files the commands need besides the code: the example configs, the unit file, the schemas.

In a checkout they live at the top (``config/``, ``schemas/``), where the README and
the tests name them; a wheel carries the same files inside the package
(``daemon/examples``, ``daemon/schemas``: ``pyproject.toml`` maps them there), because
an installed package has no checkout around it.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _first_dir(*candidates: Path) -> Path:
    return next((path for path in candidates if path.is_dir()), candidates[-1])


EXAMPLES_DIR = _first_dir(_PACKAGE / "examples", _PACKAGE.parent / "config")
"""``config/``: the commented ward config, the broker's configs and ACL, the systemd unit."""
SCHEMAS_DIR = _first_dir(_PACKAGE / "schemas", _PACKAGE.parent / "schemas")
"""``schemas/``: the JSON Schemas of the input payloads."""

EXAMPLE_CONFIG = EXAMPLES_DIR / "ward.example.toml"
"""The fully commented ward config (every option with its default)."""
UNIT_FILE = EXAMPLES_DIR / "wardd.service"
"""The systemd unit (README, "Running it as a service")."""
