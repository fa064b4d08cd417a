"""AMC's config and what a search returns: :class:`AMCConfig`, one :class:`EpisodeRecord` per
episode and :class:`AMCResult` (see :mod:`slimtorch.search.amc`).

Defaults are the paper's and its reference implementation's (He et al. 2018, Sec. 3-4;
github.com/mit-han-lab/amc ``amc_search.py``): a 50% FLOPs budget, preserve ratios in
[0.2, 1], 100 warm-up episodes then 300 with decaying exploration, and the DDPG settings of
:mod:`slimtorch.search.ddpg`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from slimtorch.core.config import check_fields, config_values, is_int
from slimtorch.models import ModelSpec
from slimtorch.prune.channel_importance import IMPORTANCE
from slimtorch.search import ddpg

AMC_CONFIG_VERSION = 1
MODES = ("resource", "accuracy")  # resource-constrained / accuracy-guaranteed (Sec. 3.3)
RESOURCES = ("macs", "latency")
PAPER_BUDGET = 0.5  # "50% FLOPs" (Table 2, 3)
PAPER_LBOUND, PAPER_RBOUND = 0.2, 1.0  # reference: --lbound 0.2 --rbound 1
PAPER_WARMUP, PAPER_EPISODES = 100, 400  # Sec. 4: 100 warm-up + 300 exploiting episodes
PAPER_MEMORY_PER_LAYER = 100  # reference: --rmsize 100, times the number of layers


def _is_real(x: object, low: float, high: float, closed: bool = False) -> bool:
    ok = isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
    return ok and (low <= x <= high if closed else low < x <= high)


@dataclass(frozen=True)
class AMCConfig:
    """How AMC searches.

    Attributes:
        mode: ``resource`` (resource-constrained: the actions are clipped so the budget is
            always met; reward ``-error``) or ``accuracy`` (accuracy-guaranteed: no budget;
            reward ``-error * log(FLOPs)``).
        resource: what the budget limits: ``macs`` (the paper's FLOPs, counted in closed
            form) or ``latency`` (the search's ``latency`` callable on the pruned model).
        budget_ratio: the preserved fraction of the resource, in (0, 1] (resource mode);
            None in accuracy mode.
        lbound: the smallest preserve ratio of a channel group, in (0, 1].
        rbound: the largest preserve ratio, in [lbound, 1].
        episodes: episodes in all, warm-up included.
        warmup: first episodes with uniformly random actions and no learning.
        rollouts: episodes per batch; a batch's episodes are chosen with the same policy and
            evaluated in parallel by the workers (the result depends on this, not on the
            worker count; 1 is the reference's sequential search).
        hidden1: units of the agent's first hidden layer.
        hidden2: units of its second hidden layer.
        lr_actor: actor learning rate.
        lr_critic: critic learning rate.
        tau: target-network rate.
        agent_batch_size: transitions per agent update.
        memory_per_layer: replay memory size per prunable group.
        discount: reward discount.
        init_sigma: exploration sigma of the first episode after the warm-up.
        sigma_decay: exploration sigma factor per episode.
        baseline_alpha: rate of the moving-average reward baseline.
        val_samples: validation samples (a seeded subset) that score each episode; 0: all.
        batch_size: minibatch size when scoring.
        importance: which channels a group keeps: l1, l2 or bn (channel importance).
        reconstruct: refit the layers reading pruned channels by least squares before
            scoring (the reference's channel reconstruction).
        calib_samples: training samples whose layer inputs the reconstruction fits.
        bn_samples: training samples whose batch statistics re-estimate every BatchNorm of
            an episode's pruned model before it is scored (0: none, the paper's setup).
            Without it a pruned BatchNorm network scores near chance at tight budgets, so the
            agent sees no signal.
        round_to: channel counts are multiples of this (or the whole group).
        seed: seeds the agent and the validation subset.
        latency_batch: the batch size a latency resource is measured at (when the command line
            or a recipe builds the latency from this machine's lookup table).
        version: schema version.
    """

    mode: str = "resource"
    resource: str = "macs"
    budget_ratio: float | None = PAPER_BUDGET
    lbound: float = PAPER_LBOUND
    rbound: float = PAPER_RBOUND
    episodes: int = PAPER_EPISODES
    warmup: int = PAPER_WARMUP
    rollouts: int = 1
    hidden1: int = ddpg.HIDDEN
    hidden2: int = ddpg.HIDDEN
    lr_actor: float = ddpg.LR_ACTOR
    lr_critic: float = ddpg.LR_CRITIC
    tau: float = ddpg.TAU
    agent_batch_size: int = ddpg.BATCH_SIZE
    memory_per_layer: int = PAPER_MEMORY_PER_LAYER
    discount: float = ddpg.DISCOUNT
    init_sigma: float = ddpg.INIT_SIGMA
    sigma_decay: float = ddpg.SIGMA_DECAY
    baseline_alpha: float = ddpg.BASELINE_ALPHA
    val_samples: int = 0
    batch_size: int = 256
    importance: str = "l1"
    reconstruct: bool = False
    calib_samples: int = 256
    bn_samples: int = 0
    round_to: int = 1
    seed: int = 0
    latency_batch: int = 1
    version: int = AMC_CONFIG_VERSION

    def __post_init__(self) -> None:
        check_fields(self, _checks(self))

    def agent_config(self, steps: int) -> ddpg.DDPGConfig:
        """The agent's settings for a model of ``steps`` prunable groups."""
        return ddpg.DDPGConfig(
            hidden1=self.hidden1, hidden2=self.hidden2, lr_actor=self.lr_actor,
            lr_critic=self.lr_critic, tau=self.tau, batch_size=self.agent_batch_size,
            memory_size=self.memory_per_layer * steps, discount=self.discount,
            init_sigma=self.init_sigma, sigma_decay=self.sigma_decay,
            baseline_alpha=self.baseline_alpha,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The fields, ``version`` included, ready for JSON or TOML."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AMCConfig:
        """Inverse of :meth:`to_dict`; refuses unknown fields and other versions."""
        return cls(**config_values(cls, d))


def _checks(c: AMCConfig) -> list[tuple[str, bool, str]]:
    resource_mode = c.mode == "resource"
    budget_ok = _is_real(c.budget_ratio, 0, 1) if resource_mode else c.budget_ratio is None
    budget_text = "a number in (0, 1]" if resource_mode else "None in accuracy mode"
    resource_ok = c.resource in RESOURCES and (resource_mode or c.resource == "macs")
    return [
        ("version", c.version == AMC_CONFIG_VERSION, f"{AMC_CONFIG_VERSION}"),
        ("mode", c.mode in MODES, f"one of {', '.join(MODES)}"),
        ("resource", resource_ok, "macs or latency (accuracy mode: macs, its reward's FLOPs)"),
        ("budget_ratio", budget_ok, budget_text),
        ("lbound", _is_real(c.lbound, 0, 1), "a number in (0, 1]"),
        ("rbound", _is_real(c.rbound, 0, 1) and c.rbound >= c.lbound, "a number in [lbound, 1]"),
        ("episodes", is_int(c.episodes, 1), "an int >= 1"),
        ("warmup", is_int(c.warmup) and c.warmup <= c.episodes, "an int in [0, episodes]"),
        ("rollouts", is_int(c.rollouts, 1), "an int >= 1"),
        ("hidden1", is_int(c.hidden1, 1), "an int >= 1"),
        ("hidden2", is_int(c.hidden2, 1), "an int >= 1"),
        ("lr_actor", _is_real(c.lr_actor, 0, math.inf), "a number > 0"),
        ("lr_critic", _is_real(c.lr_critic, 0, math.inf), "a number > 0"),
        ("tau", _is_real(c.tau, 0, 1), "a number in (0, 1]"),
        ("agent_batch_size", is_int(c.agent_batch_size, 1), "an int >= 1"),
        ("memory_per_layer", is_int(c.memory_per_layer, 1), "an int >= 1"),
        ("discount", _is_real(c.discount, 0, 1, closed=True), "a number in [0, 1]"),
        ("init_sigma", _is_real(c.init_sigma, 0, math.inf, closed=True), "a number >= 0"),
        ("sigma_decay", _is_real(c.sigma_decay, 0, 1), "a number in (0, 1]"),
        ("baseline_alpha", _is_real(c.baseline_alpha, 0, 1, closed=True), "a number in [0, 1]"),
        ("val_samples", is_int(c.val_samples), "an int >= 0"),
        ("batch_size", is_int(c.batch_size, 1), "an int >= 1"),
        ("importance", c.importance in IMPORTANCE, f"one of {', '.join(IMPORTANCE)}"),
        ("reconstruct", isinstance(c.reconstruct, bool), "true or false"),
        ("calib_samples", is_int(c.calib_samples, 1), "an int >= 1"),
        ("round_to", is_int(c.round_to, 1), "an int >= 1"),
        ("latency_batch", is_int(c.latency_batch, 1), "an int >= 1"),
        ("bn_samples", is_int(c.bn_samples, 0), "an int >= 0"),
        ("seed", is_int(c.seed), "an int >= 0"),
    ]


@dataclass(frozen=True)
class EpisodeRecord:
    """One episode: its policy and how the pruned model scored (no fine-tuning).

    Attributes:
        episode: 0-based episode number.
        reward: the reward every transition of the episode received.
        accuracy: validation-subset accuracy of the pruned model.
        loss: its mean cross-entropy there.
        macs: its MACs (slimtorch's tracer).
        flops: its FLOPs (slimtorch's tracer).
        cost: its resource: MACs, or the latency callable's value in latency mode.
        counts: channels kept per prunable group, by group name.
        sigma: exploration sigma (None: a random warm-up episode).
    """

    episode: int
    reward: float
    accuracy: float
    loss: float
    macs: int
    flops: int
    cost: float
    counts: dict[str, int]
    sigma: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpisodeRecord:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "counts": {k: int(v) for k, v in d["counts"].items()}})


@dataclass(frozen=True)
class AMCResult:
    """What :func:`~slimtorch.search.amc.amc_search` found.

    Attributes:
        model: the best episode's pruned model (not fine-tuned).
        best: the best episode (highest reward; the earliest among equals).
        history: every episode in order (the reward curve).
        sizes: channels of every prunable group in the unpruned model, by group name.
        original: the unpruned model's ``accuracy``, ``loss``, ``macs``, ``flops``, ``cost``.
        budget: the absolute budget on ``cost`` (None in accuracy mode).
        spec: a pruned spec that rebuilds ``model`` (None when no base spec was given).
        config: the search's config.
    """

    model: nn.Module
    best: EpisodeRecord
    history: tuple[EpisodeRecord, ...]
    sizes: dict[str, int]
    original: dict[str, float]
    budget: float | None
    spec: ModelSpec | None
    config: AMCConfig

    @property
    def ratios(self) -> dict[str, float]:
        """The best policy: preserve ratio (kept / all channels) of every prunable group."""
        return {name: self.best.counts[name] / size for name, size in self.sizes.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: config, budget, original, best policy, reward curve."""
        return {
            "config": self.config.to_dict(),
            "budget": self.budget,
            "original": dict(self.original),
            "sizes": dict(self.sizes),
            "best": {**self.best.to_dict(), "ratios": self.ratios},
            "rewards": [r.reward for r in self.history],
            "history": [r.to_dict() for r in self.history],
            "spec": None if self.spec is None else self.spec.to_dict(),
        }
