"""Persistence: runs, journals, reports and cluster locks."""

from cau.store.base import EventKind, JournalEvent, LockInfo, LockOwner, ReportQuery, RunRecord, Store

__all__ = ["EventKind", "JournalEvent", "LockInfo", "LockOwner", "ReportQuery", "RunRecord", "Store"]
