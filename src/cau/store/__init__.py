"""Persistence: runs, journals, reports and cluster locks."""

from cau.store.base import LockInfo, LockOwner, ReportQuery, RunRecord, Store

__all__ = ["LockInfo", "LockOwner", "ReportQuery", "RunRecord", "Store"]
