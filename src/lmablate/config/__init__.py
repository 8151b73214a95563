"""Configuration, validated once at the edge; no torch.

``run`` holds the three sections of a run config (model, train, data), ``keys`` the YAML
reading, flat keys, ``--set`` overrides and "did you mean" suggestions, ``study`` the study files
(a baseline, named variants, seeds, samples).
"""

from lmablate.config.run import DataConfig, ModelConfig, RunConfig, TrainConfig
from lmablate.config.study import Study, StudyRun, load_study

__all__ = [
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "Study",
    "StudyRun",
    "TrainConfig",
    "load_study",
]
