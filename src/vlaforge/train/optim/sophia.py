"""Sophia (Liu et al., 2023, "Sophia: A Scalable Stochastic Second-order Optimizer").

Momentum divided by an EMA of a diagonal Hessian estimate, clipped per coordinate to [-1, 1]
(so a flat or negative-curvature coordinate moves like sign descent, at most ``lr``). The
diagonal comes from Hutchinson's estimator u * (H u) with Rademacher u every
``hessian_every`` steps. H u is a finite difference of gradients,
(grad L(theta + eps u) - grad L(theta)) / eps, evaluated with the step's closure: no double
backward (which fused attention kernels lack), and exact when the loss is quadratic.
"""

from __future__ import annotations

import torch


class Sophia(torch.optim.Optimizer):
    requires_closure = True  # the trainer passes a closure that recomputes the step's gradients

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.965, 0.99), rho: float = 0.04,
                 weight_decay: float = 0.1, hessian_every: int = 10, fd_eps: float = 1e-3):
        if lr <= 0 or rho <= 0 or hessian_every < 1 or fd_eps <= 0:
            raise ValueError("Sophia needs lr, rho, fd_eps > 0 and hessian_every >= 1")
        defaults = {"lr": lr, "betas": tuple(betas), "rho": rho, "weight_decay": weight_decay}
        super().__init__(params, defaults)
        self.hessian_every, self.fd_eps = hessian_every, fd_eps

    def _live(self) -> list[tuple[dict, torch.Tensor]]:
        return [(g, p) for g in self.param_groups for p in g["params"] if p.grad is not None]

    @torch.no_grad()
    def update_hessian(self, closure) -> None:
        """One Hutchinson estimate folded into each parameter's Hessian EMA."""
        live = self._live()
        kept = [p.grad.clone() for _, p in live]  # the step's gradients, possibly clipped by the trainer
        with torch.enable_grad():
            closure()
        g0 = [p.grad.clone() for _, p in live]  # unclipped, like the perturbed ones below
        us = [torch.randint(0, 2, p.shape, device=p.device).to(p.dtype) * 2 - 1 for _, p in live]
        for (_, p), u in zip(live, us):
            p.add_(u, alpha=self.fd_eps)
        with torch.enable_grad():
            closure()
        for (group, p), u, g, k in zip(live, us, g0, kept):
            estimate = u * (p.grad - g) / self.fd_eps
            state = self.state[p]
            if "hessian" in state:
                state["hessian"].lerp_(estimate, 1 - group["betas"][1])
            else:
                state["hessian"] = estimate
            p.sub_(u, alpha=self.fd_eps)
            p.grad = k

    @torch.no_grad()
    def step(self, closure=None):
        live = self._live()
        if not live:
            return None
        first = self.state[live[0][1]]
        # Without a closure (torch.distributed.checkpoint builds the state that way) the estimate
        # is not refreshed; the trainer always passes one.
        if closure is not None and int(first.get("step", 0)) % self.hessian_every == 0:
            self.update_hessian(closure)
        for group, p in live:
            state = self.state[p]
            state["step"] = torch.tensor(float(state.get("step", 0)) + 1)
            if "exp_avg" not in state:
                state["exp_avg"] = torch.zeros_like(p)
                state.setdefault("hessian", torch.zeros_like(p))
            m = state["exp_avg"]
            m.lerp_(p.grad, 1 - group["betas"][0])
            p.mul_(1 - group["lr"] * group["weight_decay"])
            ratio = (m.abs() / (group["rho"] * state["hessian"]).clamp(min=1e-15)).clamp(max=1.0)
            p.addcmul_(m.sign(), ratio, value=-group["lr"])
        return None
