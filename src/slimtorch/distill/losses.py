"""Distillation losses as pure tensor functions: soft targets, hints, attention transfer.

- :func:`soft_target_loss` — Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a
  Neural Network": KL divergence between teacher and student softmax at temperature T,
  multiplied by T**2 so its gradients keep their size as T changes (their Sec. 2).
- :func:`kd_loss` — ``alpha * soft_target_loss + (1 - alpha) * cross_entropy(labels)``.
- :func:`hint_loss` and :class:`HintAdapter` — Romero et al. 2015, "FitNets": a learned
  regressor maps a student feature map to the teacher's width; the loss is their squared
  distance (here the mean over elements, times 1/2 as in the paper).
- :func:`attention_map` / :func:`attention_transfer_loss` — Zagoruyko & Komodakis 2017,
  "Paying More Attention to Attention": spatial maps ``sum_c |A_c|**2`` (here the channel
  mean), flattened and L2-normalized; the loss is the mean squared difference, as in the
  authors' code, weighted by ``beta / 2`` with ``beta = 1000`` (``AT_BETA``).

Example:
    >>> import torch
    >>> s, t = torch.zeros(2, 3), torch.zeros(2, 3)
    >>> float(soft_target_loss(s, t, temperature=4.0))
    0.0
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from slimtorch.errors import ConfigError

# Zagoruyko & Komodakis 2017 (their code): the attention loss is weighted by beta / 2.
AT_BETA = 1000.0


def soft_target_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T**2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch.

    Args:
        student_logits: ``[N, C]`` student logits (gradients flow into these).
        teacher_logits: ``[N, C]`` teacher logits (treated as constants).
        temperature: T > 0; higher T softens both distributions.

    Returns:
        A scalar. Its gradient w.r.t. the student logits is ``T * (q_s - q_t) / N`` with
        ``q = softmax(logits / T)``: for large T about ``(z_s - z_t) / (C N)``, independent of T.

    Example:
        >>> import torch
        >>> s = torch.tensor([[2.0, 0.0]]); t = torch.tensor([[0.0, 2.0]])
        >>> round(float(soft_target_loss(s, t, 1.0)), 4)
        1.5232
    """
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    log_q_s = F.log_softmax(student_logits / temperature, dim=1)  # [N, C]
    q_t = F.softmax(teacher_logits.detach() / temperature, dim=1)  # [N, C]
    return temperature**2 * F.kl_div(log_q_s, q_t, reduction="batchmean")


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> Tensor:
    """Hinton's mixed objective: ``alpha * soft targets + (1 - alpha) * hard-label CE``.

    Args:
        student_logits: ``[N, C]``.
        teacher_logits: ``[N, C]``.
        targets: ``[N]`` int64 labels.
        temperature: softmax temperature of the soft term.
        alpha: weight of the soft term in [0, 1]; 0 is plain cross-entropy.

    Returns:
        A scalar loss.

    Example:
        >>> import torch
        >>> s = torch.tensor([[2.0, 0.0]]); y = torch.tensor([0])
        >>> torch.isclose(kd_loss(s, s, y, alpha=0.0), F.cross_entropy(s, y)).item()
        True
    """
    hard = F.cross_entropy(student_logits, targets)
    if alpha == 0:
        return hard
    return (
        alpha * soft_target_loss(student_logits, teacher_logits, temperature) + (1 - alpha) * hard
    )


class HintAdapter(nn.Module):
    """FitNets regressor: a 1x1 conv (feature maps) or a linear layer (vectors), no bias.

    Example:
        >>> import torch
        >>> HintAdapter(4, 8, conv=True)(torch.zeros(2, 4, 3, 3)).shape
        torch.Size([2, 8, 3, 3])
    """

    def __init__(self, student_channels: int, teacher_channels: int, conv: bool) -> None:
        super().__init__()
        self.proj = (
            nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)
            if conv
            else nn.Linear(student_channels, teacher_channels, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Map ``[N, Cs, H, W]`` (or ``[N, Cs]``) to the teacher's channel count."""
        return self.proj(x)

    @classmethod
    def for_features(cls, student: Tensor, teacher: Tensor) -> HintAdapter:
        """An adapter sized for these two feature tensors (same rank, 2-D or 4-D)."""
        if student.ndim != teacher.ndim or student.ndim not in (2, 4):
            raise ConfigError(
                f"hint features must both be [N, C] or [N, C, H, W]; got student "
                f"{list(student.shape)}, teacher {list(teacher.shape)}"
            )
        return cls(student.shape[1], teacher.shape[1], conv=student.ndim == 4)


def hint_loss(student_feat: Tensor, teacher_feat: Tensor, adapter: nn.Module) -> Tensor:
    """FitNets hint: ``0.5 * mean((adapter(student) - teacher)**2)``.

    Spatial sizes that differ are matched by average-pooling the regressed student map to the
    teacher's size.

    Args:
        student_feat: ``[N, Cs, H, W]`` or ``[N, Cs]``.
        teacher_feat: ``[N, Ct, H', W']`` or ``[N, Ct]`` (constant).
        adapter: maps ``Cs`` to ``Ct`` channels (a :class:`HintAdapter`).

    Returns:
        A scalar.

    Example:
        >>> import torch
        >>> a = HintAdapter(2, 2, conv=False)
        >>> with torch.no_grad(): _ = a.proj.weight.copy_(torch.eye(2))
        >>> float(hint_loss(torch.ones(1, 2), torch.zeros(1, 2), a).detach())
        0.5
    """
    regressed = adapter(student_feat)
    target = teacher_feat.detach()
    if regressed.ndim == 4 and regressed.shape[-2:] != target.shape[-2:]:
        regressed = F.adaptive_avg_pool2d(regressed, target.shape[-2:])
    if regressed.shape != target.shape:
        raise ConfigError(
            f"hint: regressed student {list(regressed.shape)} != teacher {list(target.shape)}"
        )
    return 0.5 * (regressed - target).pow(2).mean()


def attention_map(features: Tensor) -> Tensor:
    """Spatial attention: channel mean of squared activations, flattened, L2-normalized.

    Args:
        features: ``[N, C, H, W]`` (or ``[N, D]``: each feature its own position).

    Returns:
        ``[N, H*W]`` (or ``[N, D]``) rows of unit L2 norm.

    Example:
        >>> import torch
        >>> attention_map(torch.ones(1, 3, 2, 2))
        tensor([[0.5000, 0.5000, 0.5000, 0.5000]])
    """
    energy = features.pow(2).mean(dim=1) if features.ndim > 2 else features.pow(2)
    return F.normalize(energy.flatten(1), dim=1)


def attention_transfer_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """Mean squared difference of student and teacher attention maps (same spatial size).

    Example:
        >>> import torch
        >>> x = torch.randn(2, 4, 3, 3)
        >>> bool(attention_transfer_loss(x, 5 * x) < 1e-12)
        True
    """
    a_s, a_t = attention_map(student_feat), attention_map(teacher_feat.detach())
    if a_s.shape != a_t.shape:
        raise ConfigError(
            f"attention transfer needs equal spatial sizes: student {list(student_feat.shape)}"
            f", teacher {list(teacher_feat.shape)}"
        )
    return (a_s - a_t).pow(2).mean()
