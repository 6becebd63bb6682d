"""Governance: lineage."""
