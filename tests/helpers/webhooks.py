"""What the webhook tests deliver: a receiver's token, and a task and a worker as the
service posts them."""

from __future__ import annotations

TOKEN = "whsec-0123456789abcdef"
TASK = {
    "id": "tsk_1",
    "workerId": "wrk_1",
    "title": "Weekly report",
    "status": "completed",
    "triggeredBy": "schedule",
    "createdAt": "2026-05-01T10:00:00Z",
    "completedAt": "2026-05-01T10:00:03Z",
    "organizationId": "org_1",
    "url": "https://handinger.com/t/tsk_1",
    "totals": {"credits": 3, "durationMs": 2500, "turnCount": 1},
}
WORKER = {
    "id": "wrk_1",
    "object": "worker",
    "status": "completed",
    "running": False,
    "created_at": "2026-05-01T10:00:00Z",  # today's ISO string where the seed had a number
    "output_text": "All done.",
    "url": "https://handinger.com/w/wrk_1",
    "structured_output": {"total": 3},
}
