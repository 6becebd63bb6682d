"""Decisions: indicators computed per administrative unit (and, later, alerts and events)."""
