"""The API's resources, one module each, as in the official SDK: ``client.workers``."""

from .workers import SyncWorkers, Workers

__all__ = ["SyncWorkers", "Workers"]
