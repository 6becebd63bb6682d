"""Compulsory-education enrollment scene."""
