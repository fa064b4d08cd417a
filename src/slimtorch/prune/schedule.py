"""Pruning schedules: how sparsity grows over prune steps.

- one-shot: the target at once;
- iterative (Han et al. 2015): ``K`` prune/fine-tune rounds; round ``k`` reaches
  ``1 - (1 - s)^(k/K)``, i.e. every round removes the same fraction of the remaining weights;
- gradual (Zhu & Gupta 2017): ``s_t = s_f + (s_i - s_f) (1 - (t - t_0) / (n dt))^3`` for
  ``t`` in ``t_0 .. t_0 + n dt``: fast early, slow as the network has fewer weights left.
"""

from __future__ import annotations

from slimtorch.errors import ConfigError
from slimtorch.prune.masks import check_sparsity

ZHU_GUPTA_EXPONENT = 3  # the cubic ramp of Zhu & Gupta (2017), eq. 1
GRADUAL_RAMP_FRACTION = 0.75  # prune during the first 3/4 of training, then only fine-tune


def iterative_sparsities(final: float, rounds: int) -> list[float]:
    """Sparsity after each of ``rounds`` iterative rounds (the last one is ``final``).

    Example:
        >>> [round(s, 4) for s in iterative_sparsities(0.75, 2)]
        [0.5, 0.75]
    """
    check_sparsity(final)
    if rounds < 1:
        raise ConfigError(f"iterative pruning needs rounds >= 1, got {rounds}")
    return [1.0 - (1.0 - final) ** ((k + 1) / rounds) for k in range(rounds)]


def zhu_gupta_sparsity(
    step: int, final: float, begin: int, prune_steps: int, frequency: int, initial: float = 0.0
) -> float:
    """Zhu & Gupta's cubic schedule at training ``step``.

    Args:
        step: the current training step.
        final: ``s_f``, reached at ``begin + prune_steps * frequency``.
        begin: ``t_0``, the step pruning starts.
        prune_steps: ``n``, the number of pruning updates.
        frequency: ``dt``, training steps between updates.
        initial: ``s_i``.

    Returns:
        The sparsity to hold from ``step`` on (constant between updates).

    Example:
        >>> [zhu_gupta_sparsity(t, 0.875, 0, 2, 10) for t in (0, 10, 20, 99)]
        [0.0, 0.765625, 0.875, 0.875]
    """
    if step < begin:
        return initial
    done = min(prune_steps, (step - begin) // frequency)  # updates already applied
    ramp = 1.0 - done / prune_steps
    return final + (initial - final) * ramp**ZHU_GUPTA_EXPONENT


def gradual_plan(total_steps: int, prune_steps: int) -> tuple[int, int]:
    """(begin, frequency) spreading ``prune_steps`` updates over the ramp fraction of training.

    Example:
        >>> gradual_plan(100, 5)
        (0, 15)
    """
    ramp = max(prune_steps, int(total_steps * GRADUAL_RAMP_FRACTION))
    return 0, max(1, ramp // prune_steps)
