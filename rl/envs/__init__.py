"""Environments of the project's own, registered with Gymnasium when ``rl`` is imported."""

import gymnasium as gym

from rl.envs.architecture import ArchitectureEnv, TableEvaluator

ARCHITECTURE_ENV = "ArchitectureSearch-v0"
if ARCHITECTURE_ENV not in gym.registry:
    gym.register(id=ARCHITECTURE_ENV, entry_point="rl.envs.architecture:from_table")

__all__ = ["ARCHITECTURE_ENV", "ArchitectureEnv", "TableEvaluator"]
