"""AMC's DDPG agent: oracles are toy problems with known optima, scipy's truncated normal, and
the critic target written out from the paper's formula.
"""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from slimtorch.errors import ConfigError
from slimtorch.profile.noise import torch_threads
from slimtorch.search.ddpg import DDPG, DDPGConfig, truncated_normal


@pytest.mark.parametrize(("mean", "sigma"), [(0.5, 0.5), (0.9, 0.5), (0.0, 0.2), (1.0, 0.05)])
def test_truncated_normal_matches_scipy(mean: float, sigma: float) -> None:
    g = torch.Generator().manual_seed(1)
    x = truncated_normal(torch.full((4000,), mean), sigma, 0.0, 1.0, g).numpy()
    a, b = (0.0 - mean) / sigma, (1.0 - mean) / sigma
    oracle = stats.truncnorm(a, b, loc=mean, scale=sigma)
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert stats.kstest(x, oracle.cdf).pvalue > 0.01
    assert abs(x.mean() - oracle.mean()) < 4 * oracle.std() / 4000**0.5


def test_truncated_normal_far_tail_and_zero_sigma() -> None:
    g = torch.Generator().manual_seed(0)
    far = truncated_normal(torch.tensor([8.0]), 0.5, 0.0, 1.0, g)  # mean far above the range
    oracle = stats.truncnorm((0 - 8.0) / 0.5, (1 - 8.0) / 0.5, loc=8.0, scale=0.5)
    assert float(far) == 1.0 and oracle.median() > 0.95  # the nearest bound
    mean = torch.tensor([1.3, 0.4], dtype=torch.float64)
    assert truncated_normal(mean, 0.0, 0.0, 1.0, g).tolist() == [1.0, 0.4]


def _train_one_step(config: DDPGConfig, episodes: int, warmup: int, seed: int) -> float:
    """Single-step episodes, reward -(a - 0.3)^2: the optimal action is 0.3."""
    agent, s = DDPG(1, config=config, seed=seed), torch.zeros(1)
    for e in range(episodes):
        a = agent.random_action() if e < warmup else agent.act(s, agent.sigma(e, warmup))
        agent.remember(s, a, -((float(a) - 0.3) ** 2), s, True)
        if e >= warmup:
            agent.update()
    return float(agent.act(s))


def test_ddpg_learns_a_one_dimensional_optimum() -> None:
    with torch_threads(1):
        action = _train_one_step(DDPGConfig(), episodes=250, warmup=50, seed=0)
    assert abs(action - 0.3) < 0.05


def test_ddpg_learns_each_step_of_an_episode_from_one_shared_reward() -> None:
    """Two steps, both transitions get R = a1 - a0 (discount 1, as AMC): the optimum is
    a0 = 0, a1 = 1, learnt only through the critic's bootstrapping over the episode."""
    states = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])]
    agent, warmup = DDPG(2, config=DDPGConfig(), seed=0), 50
    with torch_threads(1):
        _two_step(agent, states, warmup)
    assert float(agent.act(states[0])) < 0.05 and float(agent.act(states[1])) > 0.95


def _two_step(agent: DDPG, states: list[torch.Tensor], warmup: int) -> None:
    for e in range(250):
        acts = [agent.random_action() if e < warmup else agent.act(s, agent.sigma(e, warmup))
                for s in states]  # fmt: skip
        reward = float(acts[1] - acts[0])
        for t in range(2):
            agent.remember(states[t], acts[t], reward, states[1], t == 1)
            if e >= warmup:
                agent.update()


def test_critic_target_is_reward_minus_baseline_plus_bootstrap() -> None:
    cfg = DDPGConfig(hidden1=8, hidden2=8, batch_size=3, memory_size=3, discount=0.9)
    agent = DDPG(2, config=cfg, seed=0)
    s, s2 = torch.randn(3, 2), torch.randn(3, 2)
    a, r, done = torch.rand(3, 1), torch.tensor([1.0, -2.0, 4.0]), [False, True, False]
    for i in range(3):
        agent.remember(s[i], a[i], float(r[i]), s2[i], done[i])
    with torch.no_grad():  # the batch is the whole memory: the loss does not depend on order
        q_next = agent.critic_target(s2, agent.actor_target(s2))[:, 0]
        d = torch.tensor([float(x) for x in done])
        target = r - r.mean() + 0.9 * (1 - d) * q_next  # first baseline = the batch mean
        expected = F.mse_loss(agent.critic(s, a)[:, 0], target)
    losses = agent.update()
    assert losses["baseline"] == pytest.approx(float(r.mean()))
    assert losses["critic_loss"] == pytest.approx(float(expected), rel=1e-5)


def test_reward_baseline_is_a_moving_average_of_batch_means() -> None:
    cfg = DDPGConfig(hidden1=4, hidden2=4, batch_size=2, memory_size=2, baseline_alpha=0.25)
    agent = DDPG(1, config=cfg, seed=0)
    z = torch.zeros(1)
    agent.remember(z, z, 2.0, z, True)
    agent.remember(z, z, 4.0, z, True)
    assert agent.update()["baseline"] == 3.0
    agent.memory.rewards[:] = 7.0  # every later batch has mean 7
    assert agent.update()["baseline"] == pytest.approx(3.0 + 0.25 * (7.0 - 3.0))
    assert agent.update()["baseline"] == pytest.approx(4.0 + 0.25 * (7.0 - 4.0))


def _continue(agent: DDPG, steps: int) -> list[float]:
    out, s = [], torch.tensor([0.5, -0.5])
    for i in range(steps):
        a = agent.act(s, sigma=0.3)
        agent.remember(s, a, float(i % 3), s * 0.5, i % 2 == 0)
        agent.update()
        out.append(float(a))
    return out


def test_state_dict_resumes_exactly() -> None:
    cfg = DDPGConfig(hidden1=16, hidden2=16, batch_size=4, memory_size=10)
    a = DDPG(2, config=cfg, seed=3)
    _continue(a, 12)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = DDPG(2, config=cfg, seed=99)  # different init and RNG, all replaced by the state
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert _continue(a, 8) == _continue(b, 8)
    for pa, pb in zip(a.actor.parameters(), b.actor.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_same_seed_same_agent_and_sigma_schedule() -> None:
    cfg = DDPGConfig(hidden1=8, hidden2=8)
    x, y = DDPG(3, config=cfg, seed=5), DDPG(3, config=cfg, seed=5)
    assert torch.equal(x.act(torch.ones(3), 0.5), y.act(torch.ones(3), 0.5))
    assert x.sigma(10, 10) == 0.5 and x.sigma(12, 10) == pytest.approx(0.5 * 0.95**2)


@pytest.mark.parametrize(
    ("field", "value"), [("tau", 0.0), ("batch_size", 0), ("discount", 1.5), ("hidden1", 2.5)]
)
def test_bad_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"DDPGConfig\.{field}"):
        DDPGConfig(**{field: value})


def test_update_on_empty_memory_is_an_error() -> None:
    with pytest.raises(ConfigError, match="empty"):
        DDPG(1, config=DDPGConfig(hidden1=2, hidden2=2)).update()
