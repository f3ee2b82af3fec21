"""Prefect flows: the per-media flow and maintenance flows."""
