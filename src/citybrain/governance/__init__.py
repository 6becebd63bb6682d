"""Governance: identity, catalog, sharing and grants, the gate, masking, audit, quality, lineage."""
