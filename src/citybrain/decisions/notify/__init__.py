"""Notifications: subscriptions to event-centre happenings, a durable outbox, delivery."""
