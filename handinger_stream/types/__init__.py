"""The API's shapes as msgspec Structs with the wire's names, as the official SDK's ``types``.

Both generations: the seed's Worker (a run) and its events, today's tasks, turns,
worker templates, schedules and webhooks.

>>> from handinger_stream.types import Task, Worker, WorkerTemplate
"""

from .events import AISDKVersion, Event, WorkerSnapshotEvent
from .schedule import (
    CronWorkerSchedule,
    DelayedWorkerSchedule,
    IntervalWorkerSchedule,
    ScheduleCancelResponse,
    ScheduledWorkerSchedule,
    ScheduleListResponse,
    WorkerSchedule,
)
from .task import DeleteTaskResponse, Task, TaskStatus, TaskTotals, TaskTrigger, TaskWithTurns, Turn
from .webhook import Webhook, WebhookExecution, WebhookExecutionList
from .worker import (
    Budget,
    Costs,
    EmailAddress,
    File,
    OutputMessage,
    OutputText,
    Source,
    StructuredOutputError,
    Usage,
    Worker,
    WorkerStatus,
)
from .worker_template import DeleteWorkerResponse, Visibility, WorkerTemplate

__all__ = [
    "AISDKVersion",
    "Budget",
    "Costs",
    "CronWorkerSchedule",
    "DelayedWorkerSchedule",
    "DeleteTaskResponse",
    "DeleteWorkerResponse",
    "EmailAddress",
    "Event",
    "File",
    "IntervalWorkerSchedule",
    "OutputMessage",
    "OutputText",
    "ScheduleCancelResponse",
    "ScheduleListResponse",
    "ScheduledWorkerSchedule",
    "Source",
    "StructuredOutputError",
    "Task",
    "TaskStatus",
    "TaskTotals",
    "TaskTrigger",
    "TaskWithTurns",
    "Turn",
    "Usage",
    "Visibility",
    "Webhook",
    "WebhookExecution",
    "WebhookExecutionList",
    "Worker",
    "WorkerSchedule",
    "WorkerSnapshotEvent",
    "WorkerStatus",
    "WorkerTemplate",
]
