"""Learning: triple-barrier labels, LightGBM training, importance, MLflow registry, AI filter."""

from signalengine.tasks.learning.ai_filter import ChampionFilter
from signalengine.tasks.learning.importance import extract_importance, store_importance
from signalengine.tasks.learning.labels import build_dataset
from signalengine.tasks.learning.registry import publish_model
from signalengine.tasks.learning.training import TrainingConfig, train_filter

__all__ = [
    "ChampionFilter",
    "TrainingConfig",
    "build_dataset",
    "extract_importance",
    "publish_model",
    "store_importance",
    "train_filter",
]
