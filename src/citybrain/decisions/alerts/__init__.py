"""Alerts: rules on indicators and sensor streams that open event-centre cases, without storms."""
