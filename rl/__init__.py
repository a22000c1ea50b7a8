"""Reinforcement-learning agents usable on their own: tabular Q-learning and DQN on Gymnasium."""
