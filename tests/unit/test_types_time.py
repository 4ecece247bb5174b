"""RFC 3339 times, as /status, the audit trail and Parameter Store answers write them and the CLI reads them."""

from __future__ import annotations

import pytest

from agent.core.types import format_rfc3339, parse_rfc3339


def test_rfc3339_in_whole_seconds_and_in_milliseconds_round_trips() -> None:
    """Whole seconds by default, milliseconds on request, always UTC with Z; parsing gives the epoch back."""
    assert format_rfc3339(1_764_547_141.25) == "2025-11-30T23:59:01Z"
    assert format_rfc3339(1_764_547_141.25, millis=True) == "2025-11-30T23:59:01.250Z"
    assert parse_rfc3339("2025-11-30T23:59:01.250Z") == 1_764_547_141.25
    assert parse_rfc3339("2025-12-01T00:59:01+01:00") == 1_764_547_141.0
    with pytest.raises(ValueError):
        parse_rfc3339("yesterday")
