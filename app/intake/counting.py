"""The intake's count of received deliveries, by event type (`respawn_events_received_total`)."""

from __future__ import annotations

from collections.abc import Sequence

from app import metrics
from app.core.deliveries import Delivery
from app.runner.documents import ExecutionDocument

# Ansible's callback events (and the Runner's own `playbook_result`): a metric label per known
# type, the rest counted as "other", so a sender cannot grow the label set.
KNOWN_EVENT_TYPES = frozenset(
    {
        "playbook_on_start",
        "playbook_on_play_start",
        "playbook_on_task_start",
        "playbook_on_handler_task_start",
        "playbook_on_include",
        "playbook_on_no_hosts_matched",
        "playbook_on_no_hosts_remaining",
        "playbook_on_stats",
        "playbook_result",
        "runner_on_start",
        "runner_on_ok",
        "runner_on_failed",
        "runner_on_skipped",
        "runner_on_unreachable",
        "runner_on_async_poll",
        "runner_on_async_ok",
        "runner_on_async_failed",
        "runner_item_on_ok",
        "runner_item_on_failed",
        "runner_item_on_skipped",
        "runner_retry",
    }
)


def event_label(delivery: Delivery) -> str:
    item = delivery.item
    if isinstance(item, ExecutionDocument):
        return "document"
    return item.event_type if item.event_type in KNOWN_EVENT_TYPES else "other"


def count_received(
    deliveries: Sequence[Delivery], stored: Sequence[bool], spooled: Sequence[bool] = ()
) -> None:
    """Count each delivery received by its event type and what became of it."""
    for n, delivery in enumerate(deliveries):
        if spooled:
            outcome = "spooled" if spooled[n] else "duplicate"
        else:
            outcome = "stored" if stored[n] else "duplicate"
        metrics.EVENTS_RECEIVED.labels(event_type=event_label(delivery), outcome=outcome).inc()
