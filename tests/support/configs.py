"""The invalid-config fixtures in tests/configs/invalid and what each must be refused for."""

from __future__ import annotations

from pathlib import Path

from tests.support.paths import INVALID_CONFIGS

INVALID = sorted(INVALID_CONFIGS.glob("*.toml"))


def expected_keys(path: Path) -> list[str]:
    """The keys a fixture's first line (``# expect: a.b, c.d``) says the refusal must name."""
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: ")
    return [key.strip() for key in first.removeprefix("# expect: ").split(",")]


def write_token(path: Path, value: str) -> Path:
    """A token file as the agent wants it: the token, mode 0600 (looser modes draw a warning)."""
    path.write_text(value)
    path.chmod(0o600)
    return path
