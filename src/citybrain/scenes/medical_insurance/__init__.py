"""Medical-insurance supervision scene."""
