"""Corpora, frontends and the prepared dataset children train on.

``dataset`` holds the numpy containers (all a Ray worker needs); ``prepare`` builds them
from ``--data`` with the corpus readers and audio frontends."""
