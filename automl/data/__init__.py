"""Corpora, frontends and the prepared dataset children train on."""

from automl.data.dataset import Dataset, Split, load_dataset

__all__ = ["Dataset", "Split", "load_dataset"]
