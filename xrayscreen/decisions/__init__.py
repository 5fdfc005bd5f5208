"""Operator decisions: the SQLite decision log and its exports (no Qt)."""

from xrayscreen.decisions.log import Decision, DecisionLog, default_log_path

__all__ = ["Decision", "DecisionLog", "default_log_path"]
