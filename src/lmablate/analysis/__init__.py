"""Analysis of a finished (or partial) study, read from its run directories alone; no torch.

``rundata`` reads the directories, ``stats`` compares variants across seeds, ``validity``
checks confounds, leakage and budgets, ``findings`` turns it all into tables and key findings.
"""

from lmablate.analysis.findings import Analysis, analyze
from lmablate.analysis.rundata import StudyData, load_study_dir

__all__ = ["Analysis", "StudyData", "analyze", "load_study_dir"]
