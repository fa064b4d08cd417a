"""DDPG (Lillicrap et al. 2016) with the settings of AMC (He et al. 2018, Sec. 3.4).

The agent AMC trains: an actor ``mu(s)`` (two hidden ReLU layers, a sigmoid output: the action
is a preserve ratio in [0, 1]) and a critic ``Q(s, a)`` (the state and the action enter the
first hidden layer through separate linear maps that are summed), each with a target copy
that follows by Polyak averaging (``tau``). Exploration draws the action from a normal
distribution *truncated* to [0, 1] around ``mu(s)``, its sigma decaying by ``sigma_decay``
per episode after the warm-up; during the warm-up the agent acts uniformly at random and
does not learn. The critic regresses ``r - b + discount * (1 - done) * Q'(s', mu'(s'))``,
where ``b`` is a moving average of the sampled rewards (the paper's variance-reducing
baseline; the reference implementation updates it once per minibatch with rate 0.5).

Why a plain-torch agent and not stable-baselines3's DDPG on a gymnasium environment, as the
issue prefers: stable-baselines3 cannot express four parts of the paper's setup without
overriding its internals.

1. Truncated-normal exploration centred on the action: SB3's ``ActionNoise.__call__()``
   takes no argument and returns noise that ``OffPolicyAlgorithm._sample_action`` *adds* to
   the scaled action before clipping to [-1, 1]; a distribution truncated around ``mu(s)``
   needs ``mu(s)``, and clipping piles probability on the bounds instead of truncating.
2. One reward for every transition of an episode, known only when the episode ends (the
   pruned model is evaluated then): SB3 writes each transition to its replay buffer as it
   is collected, with the reward ``step`` returned; the earlier transitions would have to be
   rewritten inside the buffer afterwards.
3. The moving-average reward baseline inside the critic target: ``TD3.train`` (which DDPG
   reuses) builds the target from the stored reward with no hook; it would have to be
   copied and modified.
4. Parallel roll-outs whose result does not depend on the worker count: AMC evaluates a batch
   of finished episodes together (``Workers.map``), then learns from them in episode order.
   SB3 collects experience step-synchronously from a ``VecEnv`` whose size changes what it
   learns.

The agent is small (two 300-unit layers), deterministic for a seed (its own
``torch.Generator`` for every random draw; the networks are initialized under a forked RNG),
and its whole state, replay memory and generator included, round-trips through
:meth:`DDPG.state_dict` so that a search can resume exactly.

Example:
    >>> agent = DDPG(state_dim=2, config=DDPGConfig(hidden1=8, hidden2=8), seed=0)
    >>> a = agent.act(torch.zeros(2), sigma=0.5)
    >>> a.shape, bool(0.0 <= float(a) <= 1.0)
    (torch.Size([1]), True)
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimtorch.core.config import check_fields, config_values
from slimtorch.errors import ConfigError

DDPG_CONFIG_VERSION = 1
# AMC's defaults (He et al. 2018, Sec. 3.4; github.com/mit-han-lab/amc amc_search.py)
HIDDEN = 300  # units of both hidden layers of the actor and the critic
LR_ACTOR, LR_CRITIC = 1e-4, 1e-3
TAU = 0.01  # target networks: theta' <- tau * theta + (1 - tau) * theta'
BATCH_SIZE = 64
DISCOUNT = 1.0  # "to avoid over-prioritizing short-term rewards"
INIT_SIGMA, SIGMA_DECAY = 0.5, 0.95  # truncated-normal exploration, decayed per episode
BASELINE_ALPHA = 0.5  # moving-average reward baseline, updated per minibatch
ACTION_LOW, ACTION_HIGH = 0.0, 1.0


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class DDPGConfig:
    """Hyper-parameters of the agent (defaults: AMC's).

    Attributes:
        hidden1: units of the first hidden layer (actor and critic).
        hidden2: units of the second hidden layer.
        lr_actor: Adam learning rate of the actor.
        lr_critic: Adam learning rate of the critic.
        tau: Polyak rate of the target networks, in (0, 1].
        batch_size: transitions per update.
        memory_size: transitions the replay memory holds (oldest dropped first).
        discount: reward discount, in [0, 1].
        init_sigma: exploration sigma of the first episode after the warm-up.
        sigma_decay: sigma factor per episode after the warm-up, in (0, 1].
        baseline_alpha: rate of the moving-average reward baseline, in [0, 1] (0: no
            baseline).
        version: schema version.
    """

    hidden1: int = HIDDEN
    hidden2: int = HIDDEN
    lr_actor: float = LR_ACTOR
    lr_critic: float = LR_CRITIC
    tau: float = TAU
    batch_size: int = BATCH_SIZE
    memory_size: int = 2000
    discount: float = DISCOUNT
    init_sigma: float = INIT_SIGMA
    sigma_decay: float = SIGMA_DECAY
    baseline_alpha: float = BASELINE_ALPHA
    version: int = DDPG_CONFIG_VERSION

    def __post_init__(self) -> None:
        checks = [
            ("hidden1", _is_int(self.hidden1) and self.hidden1 >= 1, "an integer >= 1"),
            ("hidden2", _is_int(self.hidden2) and self.hidden2 >= 1, "an integer >= 1"),
            ("lr_actor", _is_real(self.lr_actor) and self.lr_actor > 0, "a number > 0"),
            ("lr_critic", _is_real(self.lr_critic) and self.lr_critic > 0, "a number > 0"),
            ("tau", _is_real(self.tau) and 0 < self.tau <= 1, "a number in (0, 1]"),
            ("batch_size", _is_int(self.batch_size) and self.batch_size >= 1, "an integer >= 1"),
            ("memory_size", _is_int(self.memory_size) and self.memory_size >= 1, "an int >= 1"),
            ("discount", _is_real(self.discount) and 0 <= self.discount <= 1, "in [0, 1]"),
            ("init_sigma", _is_real(self.init_sigma) and self.init_sigma >= 0, "a number >= 0"),
            ("sigma_decay", _is_real(self.sigma_decay) and 0 < self.sigma_decay <= 1, "in (0, 1]"),
            ("baseline_alpha", _is_real(self.baseline_alpha) and 0 <= self.baseline_alpha <= 1,
             "in [0, 1]"),
            ("version", self.version == DDPG_CONFIG_VERSION, f"{DDPG_CONFIG_VERSION}"),
        ]  # fmt: skip
        check_fields(self, checks)

    def to_dict(self) -> dict[str, Any]:
        """The fields, ready for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DDPGConfig:
        """Inverse of :meth:`to_dict`; refuses unknown fields."""
        return cls(**config_values(cls, d))


class Actor(nn.Module):
    """``mu(s)``: state ``[B, S]`` -> action ``[B, A]`` in (0, 1)."""

    def __init__(self, state_dim: int, action_dim: int, hidden1: int, hidden2: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(state_dim, hidden1)
        self.fc2 = nn.Linear(hidden1, hidden2)
        self.fc3 = nn.Linear(hidden2, action_dim)

    def forward(self, s: Tensor) -> Tensor:
        h = F.relu(self.fc1(s))  # [B, H1]
        h = F.relu(self.fc2(h))  # [B, H2]
        return torch.sigmoid(self.fc3(h))  # [B, A]


class Critic(nn.Module):
    """``Q(s, a)``: state ``[B, S]`` and action ``[B, A]`` -> value ``[B, 1]``."""

    def __init__(self, state_dim: int, action_dim: int, hidden1: int, hidden2: int) -> None:
        super().__init__()
        self.fc_state = nn.Linear(state_dim, hidden1)
        self.fc_action = nn.Linear(action_dim, hidden1)
        self.fc2 = nn.Linear(hidden1, hidden2)
        self.fc3 = nn.Linear(hidden2, 1)

    def forward(self, s: Tensor, a: Tensor) -> Tensor:
        h = F.relu(self.fc_state(s) + self.fc_action(a))  # [B, H1]
        h = F.relu(self.fc2(h))  # [B, H2]
        return self.fc3(h)  # [B, 1]


def truncated_normal(
    mean: Tensor, sigma: float, low: float, high: float, generator: torch.Generator
) -> Tensor:
    """Samples of ``N(mean, sigma^2)`` truncated to ``[low, high]`` (inverse-CDF method).

    Args:
        mean: one mean per sample (any shape).
        sigma: standard deviation (>= 0; 0 returns ``mean`` clipped to the bounds).
        low: lower bound.
        high: upper bound (> low).
        generator: the source of the uniform draws.

    Returns:
        A float64 tensor of ``mean``'s shape, every value in ``[low, high]`` (a mean so far
        outside the range that the range's probability underflows gives the nearest bound).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = truncated_normal(torch.full((1000,), 0.9), 0.5, 0.0, 1.0, g)
        >>> bool(x.min() >= 0.0 and x.max() <= 1.0)
        True
    """
    mu = mean.double()
    if sigma == 0:
        return mu.clamp(low, high)
    a, b = (low - mu) / sigma, (high - mu) / sigma
    # sample in the lower tail, where ndtr keeps its precision: reflect when a > 0
    flip = a > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    cdf_lo, cdf_hi = torch.special.ndtr(lo), torch.special.ndtr(hi)
    u = torch.rand(mu.shape, generator=generator, dtype=torch.float64)
    z = torch.special.ndtri(cdf_lo + u * (cdf_hi - cdf_lo))
    z = torch.where(flip, -z, z)
    x = mu + sigma * z
    # a mean so far outside the range that its mass underflows: the nearest bound
    x = torch.where(cdf_hi > cdf_lo, x, mu)
    return x.clamp(low, high)


class ReplayMemory:
    """A ring buffer of transitions ``(s, a, r, s', done)`` as preallocated tensors."""

    def __init__(self, size: int, state_dim: int, action_dim: int) -> None:
        self.size, self.count, self.next = size, 0, 0
        self.states = torch.zeros(size, state_dim)
        self.actions = torch.zeros(size, action_dim)
        self.rewards = torch.zeros(size, 1)
        self.next_states = torch.zeros(size, state_dim)
        self.dones = torch.zeros(size, 1)

    def __len__(self) -> int:
        return self.count

    def append(self, s: Tensor, a: Tensor, r: float, s_next: Tensor, done: bool) -> None:
        i = self.next
        self.states[i], self.actions[i], self.next_states[i] = s, a, s_next
        self.rewards[i, 0], self.dones[i, 0] = float(r), float(done)
        self.next, self.count = (i + 1) % self.size, min(self.count + 1, self.size)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, ...]:
        """``n`` transitions, without replacement when the memory holds at least ``n``."""
        if self.count >= n:
            idx = torch.randperm(self.count, generator=generator)[:n]
        else:
            idx = torch.randint(self.count, (n,), generator=generator)
        return (self.states[idx], self.actions[idx], self.rewards[idx],
                self.next_states[idx], self.dones[idx])  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        keys = ("states", "actions", "rewards", "next_states", "dones")
        return {"count": self.count, "next": self.next, **{k: getattr(self, k) for k in keys}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["states"].shape != self.states.shape:
            raise ConfigError("replay memory state does not match the memory size or state size")
        for key, value in state.items():
            setattr(self, key, value.clone() if isinstance(value, Tensor) else int(value))


def _soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.mul_(1 - tau).add_(s, alpha=tau)


class DDPG:
    """The DDPG agent of AMC: act, remember transitions, update from minibatches.

    Args:
        state_dim: features of a state.
        action_dim: action components (AMC: 1, the preserve ratio).
        config: hyper-parameters.
        seed: seeds the network initialization and every random draw of the agent.
    """

    def __init__(
        self, state_dim: int, action_dim: int = 1, config: DDPGConfig | None = None, seed: int = 0
    ) -> None:
        self.config = config or DDPGConfig()
        self.state_dim, self.action_dim = state_dim, action_dim
        c = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.actor = Actor(state_dim, action_dim, c.hidden1, c.hidden2)
            self.critic = Critic(state_dim, action_dim, c.hidden1, c.hidden2)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=c.lr_actor)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=c.lr_critic)
        self.memory = ReplayMemory(c.memory_size, state_dim, action_dim)
        self.generator = torch.Generator().manual_seed(seed)
        self.baseline: float | None = None

    def random_action(self) -> Tensor:
        """A uniform action in [0, 1] (the warm-up's), ``[action_dim]``."""
        return torch.rand(self.action_dim, generator=self.generator)

    def sigma(self, episode: int, warmup: int) -> float:
        """Exploration sigma of ``episode`` (0-based): ``init_sigma * decay^(episode - warmup)``."""
        return self.config.init_sigma * self.config.sigma_decay ** max(0, episode - warmup)

    def act(self, state: Tensor, sigma: float = 0.0) -> Tensor:
        """``mu(state)``, explored with truncated-normal noise of ``sigma`` (0: greedy).

        Returns:
            The action ``[action_dim]`` in [0, 1] (float32).
        """
        with torch.no_grad():
            mu = self.actor(state.float().reshape(1, -1))[0]  # [A]
        noisy = truncated_normal(mu, sigma, ACTION_LOW, ACTION_HIGH, self.generator)
        return noisy.float()

    def remember(self, s: Tensor, a: Tensor, r: float, s_next: Tensor, done: bool) -> None:
        """Store one transition."""
        self.memory.append(s.float(), a.float().reshape(-1), r, s_next.float(), done)

    def update(self) -> dict[str, float]:
        """One critic and one actor step on a minibatch; the targets follow by ``tau``.

        Returns:
            ``{"critic_loss", "actor_loss", "baseline"}``.

        Raises:
            ConfigError: the memory is empty.
        """
        if not len(self.memory):
            raise ConfigError("DDPG.update: the replay memory is empty")
        c = self.config
        s, a, r, s_next, done = self.memory.sample(c.batch_size, self.generator)
        batch_mean = float(r.mean())
        self.baseline = batch_mean if self.baseline is None else (
            self.baseline + c.baseline_alpha * (batch_mean - self.baseline))  # fmt: skip
        with torch.no_grad():
            q_next = self.critic_target(s_next, self.actor_target(s_next))  # [B, 1]
            target = r - self.baseline + c.discount * (1 - done) * q_next  # [B, 1]
        critic_loss = F.mse_loss(self.critic(s, a), target)
        self.critic_optim.zero_grad()
        critic_loss.backward()
        self.critic_optim.step()
        actor_loss = -self.critic(s, self.actor(s)).mean()
        self.actor_optim.zero_grad()
        actor_loss.backward()
        self.actor_optim.step()
        _soft_update(self.actor_target, self.actor, c.tau)
        _soft_update(self.critic_target, self.critic, c.tau)
        return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(),
                "baseline": self.baseline}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: networks, optimizers, memory, RNG, baseline
        (tensors, numbers and strings only, so ``torch.load(weights_only=True)`` reads it)."""
        nets = ("actor", "critic", "actor_target", "critic_target", "actor_optim", "critic_optim")
        return {
            **{k: getattr(self, k).state_dict() for k in nets},
            "memory": self.memory.state_dict(),
            "generator": self.generator.get_state(),
            "baseline": torch.tensor(math.nan if self.baseline is None else self.baseline),
            "config": self.config.to_dict(),
            "dims": [self.state_dim, self.action_dim],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (same config and dimensions)."""
        if DDPGConfig.from_dict(state["config"]) != self.config:
            raise ConfigError("DDPG state was saved with another DDPGConfig")
        if list(state["dims"]) != [self.state_dim, self.action_dim]:
            raise ConfigError(f"DDPG state has dimensions {state['dims']}")
        for k in ("actor", "critic", "actor_target", "critic_target", "actor_optim",
                  "critic_optim"):  # fmt: skip
            getattr(self, k).load_state_dict(state[k])
        self.memory.load_state_dict(state["memory"])
        self.generator.set_state(state["generator"])
        b = float(state["baseline"])
        self.baseline = None if math.isnan(b) else b
