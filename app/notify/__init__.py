"""Sending notifications: render a claimed notification for its channel (Standard Webhooks
JSON, Slack blocks, an email) and deliver it, with secrets resolved from the environment at
send time and never kept, logged or shown."""

from app.notify.send import Links, send_notification, send_test

__all__ = ["Links", "send_notification", "send_test"]
