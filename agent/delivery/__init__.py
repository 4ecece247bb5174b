"""Delivering secrets beyond HTTP: the CLI client, the exec supervisor, file templates, sd_notify."""
