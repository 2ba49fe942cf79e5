"""K-FAC natural gradient (Martens & Grosse, 2015) for the model's ``nn.Linear`` layers.

The Fisher block of a linear layer is approximated by the Kronecker product of A = E[a a^T]
(its inputs, with a 1 appended for the bias) and G = E[g g^T] (the loss gradients at its
outputs, here the empirical ones of the training loss), so the natural gradient of its weight
is G^-1 dW A^-1. Both factors are running averages gathered by module hooks during the normal
forward and backward; their damped inverses are refreshed every ``inv_every`` steps, with
Tikhonov damping split between the factors by the ratio of their mean eigenvalues. The update
is scaled down so that lr^2 * <update, grad> stays below ``kl_clip`` (the trust region of
kfac-pytorch), then applied with SGD momentum; parameters outside linear layers (convolutions,
norms, embeddings) take plain SGD momentum steps.

Full (unsharded) weight gradients are needed: K-FAC runs in one process or under DDP.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class KFAC(torch.optim.Optimizer):
    def __init__(self, model: nn.Module, lr: float = 0.01, momentum: float = 0.9, damping: float = 1e-3,
                 weight_decay: float = 0.0, stat_decay: float = 0.95, inv_every: int = 10, kl_clip: float = 1e-3):
        if lr <= 0 or damping <= 0 or inv_every < 1 or kl_clip <= 0:
            raise ValueError("KFAC needs lr, damping, kl_clip > 0 and inv_every >= 1")
        params = [p for p in model.parameters() if p.requires_grad]
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})
        self.damping, self.stat_decay, self.inv_every, self.kl_clip = damping, stat_decay, inv_every, kl_clip
        self.layers = [m for m in model.modules() if isinstance(m, nn.Linear) and m.weight.requires_grad]
        self._sums: dict[nn.Linear, dict[str, torch.Tensor]] = {}
        # All state exists from the start, so a checkpoint template built from a fresh optimizer
        # has every entry a saved one has.
        for p in params:
            self.state[p]["momentum_buffer"] = torch.zeros_like(p)
        for layer in self.layers:
            n_in = layer.in_features + (layer.bias is not None)
            dev = layer.weight.device
            self.state[layer.weight].update(
                kfac_seen=torch.tensor(0.0), kfac_A=torch.zeros(n_in, n_in, device=dev),
                kfac_G=torch.zeros(layer.out_features, layer.out_features, device=dev),
                kfac_A_inv=torch.eye(n_in, device=dev), kfac_G_inv=torch.eye(layer.out_features, device=dev),
            )
            layer.register_forward_hook(self._record)
        if self.layers:
            self.state[self.layers[0].weight]["kfac_step"] = torch.tensor(0.0)

    def _record(self, layer: nn.Linear, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        """Input statistics now; output-gradient statistics when backward reaches the output."""
        if not (layer.training and torch.is_grad_enabled() and output.requires_grad):
            return
        a = inputs[0].detach().float().reshape(-1, layer.in_features)
        if layer.bias is not None:
            a = torch.cat([a, a.new_ones(len(a), 1)], 1)
        self._accumulate(layer, "A", _second_moment(a))
        output.register_hook(lambda grad: self._save_grad(layer, grad))

    def _save_grad(self, layer: nn.Linear, grad: torch.Tensor) -> None:
        g = grad.detach().float().reshape(-1, layer.out_features)
        g = g * len(g)  # per-row gradients of the mean loss, scaled back to per-example size
        self._accumulate(layer, "G", _second_moment(g))

    def _accumulate(self, layer: nn.Linear, key: str, value: torch.Tensor) -> None:
        sums = self._sums.setdefault(layer, {})
        count = f"n{key}"
        sums[key] = sums.get(key, 0) + value
        sums[count] = sums.get(count, 0) + 1

    @torch.no_grad()
    def _update_factors(self) -> None:
        for layer, sums in self._sums.items():
            if "A" not in sums or "G" not in sums:
                continue
            f = self.state[layer.weight]  # kept in the optimizer state, so checkpoints carry them
            for key in ("A", "G"):
                mean = sums[key] / sums[f"n{key}"]
                f[f"kfac_{key}"].lerp_(mean, 1.0 if f["kfac_seen"] == 0 else 1 - self.stat_decay)
            f["kfac_seen"] += 1
        self._sums.clear()

    @torch.no_grad()
    def _invert(self) -> None:
        for layer in self.layers:
            f = self.state[layer.weight]
            if f["kfac_seen"] == 0:
                continue
            a, g = f["kfac_A"], f["kfac_G"]
            pi = math.sqrt(max(float(a.trace()) / len(a), 1e-12) / max(float(g.trace()) / len(g), 1e-12))
            root = math.sqrt(self.damping)
            f["kfac_A_inv"] = torch.linalg.inv(a + pi * root * torch.eye(len(a), device=a.device)).contiguous()
            f["kfac_G_inv"] = torch.linalg.inv(g + root / pi * torch.eye(len(g), device=g.device)).contiguous()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._update_factors()
        counter = self.state[self.layers[0].weight] if self.layers else {"kfac_step": torch.tensor(0.0)}
        if int(counter["kfac_step"]) % self.inv_every == 0:
            self._invert()
        counter["kfac_step"] += 1
        lr = self.param_groups[0]["lr"]
        updates = []
        for layer in self.layers:
            f = self.state[layer.weight]
            if f["kfac_seen"] == 0 or layer.weight.grad is None:
                continue
            grad = layer.weight.grad
            if layer.bias is not None:
                grad = torch.cat([grad, layer.bias.grad[:, None]], 1)
            nat = f["kfac_G_inv"] @ grad @ f["kfac_A_inv"]
            updates.append((layer, grad, nat))
        if updates:
            quadratic = sum(float((nat * grad).sum()) for _, grad, nat in updates) * lr**2
            nu = min(1.0, math.sqrt(self.kl_clip / quadratic)) if quadratic > 0 else 1.0
            for layer, _, nat in updates:
                if layer.bias is not None:
                    layer.weight.grad.copy_(nat[:, :-1] * nu)
                    layer.bias.grad.copy_(nat[:, -1] * nu)
                else:
                    layer.weight.grad.copy_(nat * nu)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
                buf = self.state[p]["momentum_buffer"].mul_(group["momentum"]).add_(d)
                p.add_(buf, alpha=-group["lr"])
        return loss


def _second_moment(x: torch.Tensor) -> torch.Tensor:
    """x^T x / n in fp32: the hooks run inside bf16/fp16 autocast, whose matmul would round the
    Kronecker factors to 8 bits of mantissa."""
    with torch.autocast(x.device.type, enabled=False):
        return x.T @ x / len(x)
