"""Configuration: settings built once from defaults < TOML file < environment < CLI, frozen, passed down."""

from agent.config.loader import *  # noqa: F403
