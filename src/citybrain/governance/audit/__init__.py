"""Governance: audit."""
