"""Governance: identity."""
