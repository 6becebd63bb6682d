"""Governance: catalog."""
