"""Configuration: settings built once from defaults < TOML file < environment < CLI, frozen, passed down.

- :mod:`~agent.config.schema`: every ``[section] key`` with its kind, default and range
- :mod:`~agent.config.kinds`: one parser per kind of value
- :mod:`~agent.config.access`: ``[[clients]]``, ``[[secret_policies]]``, token sources
- :mod:`~agent.config.delivery`: ``[[templates]]``, ``[exec]``'s settings and its ``env`` kind, systemd's environment
- :mod:`~agent.config.settings`: the frozen dataclasses components receive
- :mod:`~agent.config.loader`: :func:`load_settings`, the one reader of files and environment
"""

from agent.config.access import ClientSettings, SecretPolicySettings, TokenRef
from agent.config.delivery import EnvRef, ExecSettings, SystemdSettings, TemplateSettings
from agent.config.loader import load_settings
from agent.config.schema import SCHEMA
from agent.config.settings import (
    AuditSettings,
    AuthSettings,
    AwsSettings,
    CacheSettings,
    EventsSettings,
    FleetSettings,
    LogSettings,
    MetricsSettings,
    PrefetchSettings,
    RefreshSettings,
    ServerSettings,
    Settings,
    StatusSettings,
)

__all__ = [
    "SCHEMA",
    "AuditSettings",
    "AuthSettings",
    "AwsSettings",
    "CacheSettings",
    "ClientSettings",
    "EnvRef",
    "EventsSettings",
    "ExecSettings",
    "FleetSettings",
    "LogSettings",
    "MetricsSettings",
    "PrefetchSettings",
    "RefreshSettings",
    "SecretPolicySettings",
    "ServerSettings",
    "Settings",
    "StatusSettings",
    "SystemdSettings",
    "TemplateSettings",
    "TokenRef",
    "load_settings",
]
