"""Architecture search for audio classification: corpora, child networks, searchers, Ray, MLflow."""

__version__ = "0.1.0"
