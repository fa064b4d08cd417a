"""The calibration prologue of OBS and regression pruning against explicit im2col Hessians."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.errors import ConfigError
from slimtorch.prune.obs import layer_hessians


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 6)
    )


def test_hessians_are_two_x_xt_over_n_of_the_input_columns():
    model = _net()
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(2, 3, 5, 5, generator=g), torch.zeros(2)) for _ in range(3)]
    accs = layer_hessians(model, ["0", "3"], batches)
    x = torch.cat([b[0] for b in batches]).double()
    cols = F.unfold(x, 3, padding=1).permute(1, 0, 2).reshape(27, -1)  # [in*kh*kw, N*L]
    torch.testing.assert_close(accs["0"].hessian(), 2 * cols @ cols.T / cols.shape[1])
    torch.testing.assert_close(accs["0"].gram(), cols @ cols.T)
    with torch.no_grad():
        feats = model[2](model[1](model[0](x.float()))).double()  # the Linear's inputs
    torch.testing.assert_close(accs["3"].hessian(), 2 * feats.T @ feats / len(feats))
    assert accs["0"].count == 3 * 2 * 25 and accs["3"].count == 6


class _WithUnusedHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.spare = nn.Linear(4, 2), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # `spare` never runs


def test_a_layer_that_never_runs_is_a_clear_error():
    with pytest.raises(ConfigError, match="'spare' never ran"):
        layer_hessians(_WithUnusedHead(), ["body", "spare"], [(torch.randn(3, 4),)])
