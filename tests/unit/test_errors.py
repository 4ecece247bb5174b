"""The one exception tree: codes and statuses are class attributes, and the CLI maps classes to exit codes."""

from __future__ import annotations

import inspect

import pytest

from agent.cli.exit_codes import exit_code
from agent.core import errors
from agent.core.errors import AgentError


def all_error_classes() -> list[type[AgentError]]:
    return [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, AgentError)]


def test_every_error_class_states_its_code_and_status() -> None:
    """Every class in the tree derives from AgentError with a class-level code and HTTP status."""
    classes = all_error_classes()
    assert len(classes) > 30
    for cls in classes:
        assert isinstance(cls.code, str) and cls.code, cls
        assert 400 <= cls.status <= 599, cls


def test_instances_keep_their_class_code() -> None:
    """Raising an error does not change its code or status (only AWS's own code is kept as sent)."""
    assert errors.FieldNotFound("x").code == "FieldNotFoundException"
    assert errors.FieldNotFound("x").status == 404
    assert errors.UpstreamRejected("x").code == "InvalidRequestException"
    assert errors.UpstreamRejected("x", code="DecryptionFailure").code == "DecryptionFailure"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.ConfigError([("k", "bad")]), 2),
        (errors.CredentialsError("x"), 3),
        (errors.ListenerError("x"), 4),
        (errors.ReadNotFound("x"), 10),
        (errors.ReadDenied("x"), 11),
        (errors.AgentUnreachable("x"), 12),
        (errors.ReadFailed("x"), 13),
        (errors.WaitTimedOut("x"), 14),
        (errors.EmulatorError("x"), 1),
        (errors.UpstreamTimeout("x"), 1),
    ],
)
def test_exit_codes(error: AgentError, code: int) -> None:
    """The CLI's exit code comes from the error's class, nearest first."""
    assert exit_code(error) == code
