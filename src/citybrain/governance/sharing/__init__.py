"""Governance: sharing."""
