"""Command line: subcommands and exit codes."""

from agent.cli.main import main

__all__ = ["main"]
