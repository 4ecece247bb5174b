"""secrets-agent: a Secrets Manager sidecar that caches secrets and serves them on loopback."""

__version__ = "0.1.0"
