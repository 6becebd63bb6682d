"""Governance: verification."""
