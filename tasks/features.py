"""Where DESIGN §4 pins the features: `signalengine.tasks.features.compute_features`.

The one implementation is `signalengine.tasks.engine.features`; this module re-exports it.
"""

from signalengine.tasks.engine.features import FEATURE_COLUMNS, compute_features

__all__ = ["FEATURE_COLUMNS", "compute_features"]
