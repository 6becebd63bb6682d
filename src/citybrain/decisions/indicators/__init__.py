"""Indicator trees: YAML definitions, SQL formulas per administrative unit, scores and stars."""
