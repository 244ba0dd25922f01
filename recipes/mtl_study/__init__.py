"""Experiment machinery shared by the recipes: configuration, the resumable runner, statistics,
reports and model cards. Import the submodules directly (``from mtl_study.stats import ...``)."""

from .config import ExperimentArguments, ModelArguments, StudyTrainingArguments, parse_recipe_args
from .results import ResultsStore, atomic_write_json, atomic_write_text
from .runner import ExperimentRunner, RunOutcome, RunSpec

__all__ = ["ExperimentArguments", "ModelArguments", "StudyTrainingArguments", "parse_recipe_args", "ResultsStore",
           "atomic_write_json", "atomic_write_text", "ExperimentRunner", "RunOutcome", "RunSpec"]
