"""Integrations with application frameworks; each is optional and imports its framework."""
