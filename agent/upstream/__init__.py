"""Upstream: the AWS session, the one pool every AWS call runs in, Secrets Manager, throttling, events."""
