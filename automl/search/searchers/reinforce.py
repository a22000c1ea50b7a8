"""The policy-gradient controller (Zoph & Le 2017): an LSTM that emits one decision at a time.

At step t the LSTM reads the embedding of decision t-1's choice and a softmax head
picks decision t, so every decision is conditioned on all earlier ones. The controller
is trained with REINFORCE on the children's rewards:

    loss = -mean_i[(R_i - b) * sum_t log p(a_it)] - entropy_weight * mean_i[sum_t H_it]

with ``b`` an exponential moving average of rewards and Adam as the optimiser. Updates
happen whenever ``batch_size`` children have finished, in whatever order they finish
(asynchronous, as with parallel workers). Inactive decisions (e.g. the activation of an
absent layer) are still emitted, to keep the sequence fixed, but add nothing to the
loss. Log-probabilities are recomputed under the current policy at update time.

With a reward model (the default; ``model=none`` is the controller alone) the controller
plans (:mod:`~automl.search.searchers.planning`): a proposal is the best by the model's
acquisition of ``candidates`` samples of the policy and ``mutations`` of the best
children, and after every real update the controller takes one policy-gradient step on
``dream`` children it samples, scored by one Thompson draw of the model (advantage: the
draw's rewards, centred and scaled within the batch). A proposal the policy did not
sample itself (a mutation, a candidate the model preferred) still teaches it through the
clipped ratio to its log-probability when proposed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from automl.search.searchers.base import Proposal, Searcher, Status
from automl.search.searchers.planning import Planner, PlanningOptions
from automl.search.space import SearchSpace


@dataclass
class ReinforceConfig(PlanningOptions):
    hidden: int = 64  # LSTM width
    embedding: int = 32  # width of each choice's embedding (the next step's input)
    lr: float = 0.01  # Adam's learning rate
    batch_size: int = 1  # finished children per update (1: learn from each as it lands)
    baseline_decay: float = 0.8  # of the moving-average baseline (and reward scale)
    normalize_advantage: bool = False  # divide R - b by the running std of rewards
    epochs: int = 1  # gradient passes per batch (PPO-style, ratios clipped)
    clip: float = 0.2  # PPO's clipping of pi_new / pi_sampled
    entropy_weight: float = 0.01  # bonus that keeps the policy exploring...
    entropy_decay: bool = False  # ...decayed linearly to 0 over the budget
    failure_reward: float = 0.0  # what a failed child teaches the controller

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.batch_size, self.hidden, self.embedding, self.epochs) < 1 or self.lr <= 0:
            raise ValueError("batch_size, hidden, embedding, epochs and lr must be positive")
        if not 0 <= self.baseline_decay < 1 or self.clip <= 0:
            raise ValueError("baseline_decay must be in [0, 1) and clip positive")


class ControllerNet(nn.Module):
    """LSTM cell + one embedding table and one softmax head per decision."""

    def __init__(self, sizes: list[int], hidden: int, embedding: int) -> None:
        super().__init__()
        self.start = nn.Parameter(torch.zeros(1, embedding))
        self.embeddings = nn.ModuleList(nn.Embedding(n, embedding) for n in sizes)
        self.cell = nn.LSTMCell(embedding, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in sizes)

    def forward(
        self, actions: torch.Tensor | None, batch: int = 1, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample (``actions`` None) or score given actions; returns actions, log-probs, entropies.

        Shapes are [batch, decisions].
        """
        n = batch if actions is None else actions.shape[0]
        x = self.start.expand(n, -1)
        state = None
        chosen, log_probs, entropies = [], [], []
        for t, head in enumerate(self.heads):
            state = self.cell(x, state)
            dist = torch.distributions.Categorical(logits=head(state[0]))
            if actions is None:
                a = torch.multinomial(dist.probs, 1, generator=generator).squeeze(1)
            else:
                a = actions[:, t]
            chosen.append(a)
            log_probs.append(dist.log_prob(a))
            entropies.append(dist.entropy())
            x = self.embeddings[t](a)
        return torch.stack(chosen, 1), torch.stack(log_probs, 1), torch.stack(entropies, 1)


class ReinforceSearcher(Searcher):
    name = "reinforce"
    Config = ReinforceConfig

    def __init__(
        self, space: SearchSpace, seed: int = 0, config: ReinforceConfig | None = None
    ) -> None:
        super().__init__(space, seed, config)
        # Seed the initial weights without touching global state; devices=[] keeps it from
        # opening a CUDA context in the driver.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = ControllerNet(space.sizes, self.config.hidden, self.config.embedding)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)
        self.generator = torch.Generator().manual_seed(seed)
        self.baseline: float | None = None
        self.reward_var = 0.0  # running variance of rewards around the baseline
        self.sampled: dict[int, float] = {}  # proposal id -> its log-probability when sampled
        self.buffer: list[tuple[list[int], float, float]] = []  # actions, reward, log-prob
        self.updates = 0
        self.planner = Planner(space, self.config, seed)

    @torch.no_grad()
    def _propose(self, proposal_id: int) -> dict[str, Any]:
        if self.planner.active:
            actions, _, _ = self.net(None, batch=self.config.candidates, generator=self.generator)
            own = [self.space.values_from_indices(a) for a in actions.tolist()]
            candidates = own + self.planner.mutations(self.rng)
            values = candidates[self.planner.pick(candidates, list(self.pending.values())) or 0]
        else:
            actions, _, _ = self.net(None, generator=self.generator)
            values = self.space.values_from_indices(actions[0].tolist())
        self._adopt(proposal_id, values)
        return values

    @torch.no_grad()
    def _adopt(self, proposal_id: int, values: dict[str, Any]) -> None:
        """Keep the log-probability of ``values`` under the policy now (the ratio's
        denominator at update time) and take it out of the fresh candidates."""
        _, log_probs, _ = self.net(torch.tensor([self.space.indices_from_values(values)]))
        active = torch.tensor(self.space.active_mask(values), dtype=torch.float32)
        self.sampled[proposal_id] = float((log_probs[0] * active).sum())
        self.planner.claim(values)

    def _observe(
        self, proposal: Proposal, reward: float | None, status: Status, repeated: bool
    ) -> dict[str, float]:
        if status is Status.FAILED:
            reward = self.config.failure_reward
        indices = self.space.indices_from_values(proposal.values)
        self.buffer.append((indices, float(reward), self.sampled.pop(proposal.id)))
        self.planner.observe(proposal.values, reward, status, repeated)
        if len(self.buffer) < self.config.batch_size:
            return {}
        metrics = self._update()
        if self.planner.active and self.config.dream:
            metrics["controller/dream_reward"] = self._dream()
        return metrics

    def _dream(self) -> float:
        """One policy-gradient step on imagined children (Dyna); their mean imagined reward."""
        with torch.no_grad():
            actions, _, _ = self.net(None, batch=self.config.dream, generator=self.generator)
        values = [self.space.values_from_indices(a) for a in actions.tolist()]
        rewards = torch.from_numpy(self.planner.imagine(values, self.rng)).float()
        active = torch.tensor([self.space.active_mask(v) for v in values], dtype=torch.float32)
        advantage = (rewards - rewards.mean()) / (rewards.std() + 1e-8)
        _, log_probs, entropies = self.net(actions)
        entropy = (entropies * active).sum(1).mean()
        loss = -(advantage * (log_probs * active).sum(1)).mean() - self._entropy_weight() * entropy
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(rewards.mean())

    def _update(self) -> dict[str, float]:
        c = self.config
        actions = torch.tensor([a for a, _, _ in self.buffer])
        rewards = torch.tensor([r for _, r, _ in self.buffer])
        sampled = torch.tensor([lp for _, _, lp in self.buffer])
        active = torch.tensor(
            [self.space.active_mask(self.space.values_from_indices(a)) for a, _, _ in self.buffer],
            dtype=torch.float32,
        )
        self.buffer = []
        mean = float(rewards.mean())
        baseline = mean if self.baseline is None else self.baseline
        advantage = rewards - baseline
        self.reward_var = c.baseline_decay * self.reward_var + (1 - c.baseline_decay) * float(
            (advantage**2).mean()
        )
        if c.normalize_advantage:  # a dev-UAR spread of 0.02 must not leave the entropy to rule
            advantage = advantage / (self.reward_var**0.5 + 1e-8)
        weight = self._entropy_weight()
        for _ in range(c.epochs):
            _, log_probs, entropies = self.net(actions)
            ratio = torch.exp((log_probs * active).sum(1) - sampled)
            clipped = torch.clamp(ratio, 1 - c.clip, 1 + c.clip)
            entropy = (entropies * active).sum(1).mean()
            loss = -torch.min(ratio * advantage, clipped * advantage).mean() - weight * entropy
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        self.baseline = c.baseline_decay * baseline + (1 - c.baseline_decay) * mean
        self.updates += 1
        return {
            "controller/mean_reward": mean,
            "controller/baseline": self.baseline,
            "controller/entropy": entropy.item(),
            "controller/loss": loss.item(),
            "controller/best_reward": self.best_reward,
            "controller/updates": self.updates,
        }

    def _entropy_weight(self) -> float:
        c = self.config
        return c.entropy_weight * (self._remaining() if c.entropy_decay else 1.0)

    def _remaining(self) -> float:
        """Share of the budget still to come (1 when the search did not say its budget)."""
        return max(0.0, 1 - self.n_fresh / self.budget) if self.budget else 1.0

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "baseline": self.baseline,
            "reward_var": self.reward_var,
            "buffer": [[a, r, lp] for a, r, lp in self.buffer],
            "updates": self.updates,
            "planner": self.planner.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.baseline = state["baseline"]
        self.reward_var = state["reward_var"]
        self.buffer = [(list(a), r, lp) for a, r, lp in state["buffer"]]
        self.sampled = {}
        self.updates = state["updates"]
        self.planner.load_state_dict(state["planner"])
