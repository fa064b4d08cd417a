"""Knowledge distillation on the built-in digits: the same student with and without KD.

A ResNet-style teacher is trained once. Then, for each seed, (a) a small LeNet-300-100
student (hidden 30-10) is trained from the same initial weights with plain cross-entropy
(the baseline, alpha = 0) and with Hinton KD (T = 4, each alpha of ``--alphas``); (b) a
compression setting: LeNet-300-100 pruned to 5% of its weights by magnitude, then fine-tuned
with masks held, with and without KD from the unpruned model (teacher = the model before
compression), at each fine-tuning learning rate of ``--finetune-lrs`` (1e-3 under-trains this
fine-tune in 30 epochs: train accuracy stays near 0.93, and KD's logit matching converges
slower than cross-entropy there).

Usage:
    flock /tmp/slimtorch-bench.lock .venv/bin/python benchmarks/bench_distill.py \
        --seeds 0 1 2 --out benchmarks/results/distill.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from slimtorch.data import load_digits, make_loaders
from slimtorch.distill import DistillConfig, distill
from slimtorch.io import atomic_write_text
from slimtorch.models import create_model
from slimtorch.train import FitConfig, evaluate, fit

TEMPERATURE = 4.0  # Hinton et al. 2015 use T in [2, 20]; 4 is the common choice


def train_student(student, teacher, loaders, fit_cfg, alpha: float, after_step=None) -> float:
    train, val, test = loaders
    cfg = DistillConfig(temperature=TEMPERATURE, alpha=alpha)
    distill(student, teacher, train, val, fit_cfg, cfg, progress=False, after_step=after_step)
    return evaluate(student, test).accuracy


def magnitude_masks(model: torch.nn.Module, keep: float) -> dict[str, torch.Tensor]:
    masks = {}
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            k = max(1, int(keep * p.numel()))
            threshold = p.detach().abs().flatten().kthvalue(p.numel() - k + 1).values
            masks[name] = p.detach().abs() >= threshold
    return masks


def apply_masks(masks: dict[str, torch.Tensor]):
    def hook(model: torch.nn.Module) -> None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in masks:
                    p.mul_(masks[name])

    return hook


def small_student(seed: int, teacher, loaders, epochs: int, lr: float, alphas) -> dict:
    torch.manual_seed(seed)
    init = create_model("lenet300", hidden=(30, 10))
    fit_cfg = FitConfig(epochs=epochs, lr=lr, scheduler="cosine", seed=seed)
    return {f"alpha={a}": train_student(copy.deepcopy(init), teacher, loaders, fit_cfg, a)
            for a in (0.0, *alphas)}  # fmt: skip


def pruned_finetune(seed: int, loaders, epochs: int, keep: float, lrs, alphas) -> dict:
    torch.manual_seed(seed)
    dense = create_model("lenet300")
    fit(dense, loaders[0], loaders[1], FitConfig(epochs=30, scheduler="cosine", seed=seed),
        progress=False)  # fmt: skip
    masks = magnitude_masks(dense, keep)
    pruned = copy.deepcopy(dense)
    apply_masks(masks)(pruned)
    out = {"dense": evaluate(dense, loaders[2]).accuracy,
           "pruned, no fine-tune": evaluate(pruned, loaders[2]).accuracy}  # fmt: skip
    for lr in lrs:
        fit_cfg = FitConfig(epochs=epochs, lr=lr, scheduler="cosine", seed=seed)
        for a in (0.0, *alphas):
            student = copy.deepcopy(pruned)
            out[f"fine-tune lr={lr} alpha={a}"] = train_student(
                student, dense, loaders, fit_cfg, a, after_step=apply_masks(masks)
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=30, help="student epochs")
    ap.add_argument("--lr", type=float, default=3e-3, help="small-student learning rate")
    ap.add_argument("--keep", type=float, default=0.05, help="weights kept when pruning")
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.9], help="KD weights")
    ap.add_argument(
        "--finetune-lrs", type=float, nargs="+", default=[1e-3, 3e-3],
        help="learning rates of the pruned fine-tune",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/distill.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    splits = load_digits(seed=0)
    loaders = make_loaders(splits, batch_size=64, seed=0)
    torch.manual_seed(0)
    teacher = create_model("resnet")
    fit(teacher, loaders[0], loaders[1], FitConfig(epochs=20, scheduler="cosine"), progress=False)
    result = {"temperature": TEMPERATURE,
              "teacher_resnet_test_accuracy": evaluate(teacher, loaders[2]).accuracy,
              "small_student": {}, "pruned_lenet300": {}}  # fmt: skip
    for seed in args.seeds:
        result["small_student"][seed] = small_student(
            seed, teacher, loaders, args.epochs, args.lr, args.alphas
        )
        result["pruned_lenet300"][seed] = pruned_finetune(
            seed, loaders, args.epochs, args.keep, args.finetune_lrs, args.alphas
        )
        print(seed, result["small_student"][seed], result["pruned_lenet300"][seed], flush=True)
    for part in ("small_student", "pruned_lenet300"):
        keys = next(iter(result[part].values())).keys()
        result[f"{part}_mean"] = {
            k: statistics.mean(r[k] for r in result[part].values()) for k in keys
        }
    result["seconds"] = time.perf_counter() - start
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if "mean" in k or "teacher" in k}, indent=2))


if __name__ == "__main__":
    main()
