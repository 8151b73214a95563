"""Running a study: expand it into runs, train what is not finished (in turn, in parallel,
under torchrun or on Ray), sample text, and build the report; its status and dry-run estimate."""

from lmablate.study.runner import run_study

__all__ = ["run_study"]
