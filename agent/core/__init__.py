"""Shared vocabulary: value types, the one exception tree, logging and metrics. Imports nothing of ours."""
