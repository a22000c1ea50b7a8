"""Reinforcement-learning agents usable on their own: tabular Q-learning and DQN on any
Gymnasium environment, many seeds at once on Ray (``rl train``). Importing the package
registers its environments (:mod:`rl.envs`)."""

from rl.envs import ARCHITECTURE_ENV

__all__ = ["ARCHITECTURE_ENV"]
