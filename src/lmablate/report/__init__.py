"""The research package written from an analysis: formatting only, every number comes from
``lmablate.analysis``; no torch."""

from lmablate.report.package import build_report

__all__ = ["build_report"]
