"""TarFlow's score-based denoising of samples (Zhai et al. 2024, section 2.4).

A flow trained on noisy data ``x + σε`` (``train.objective: {maximum_likelihood:
{noise: σ}}``) samples noisy points. By Tweedie's formula the posterior mean of the
clean point is ``E[x | x̃] = x̃ + σ² ∇ log p_σ(x̃)``, and the flow's own density *is*
``p_σ``: one gradient of ``log_prob`` removes the noise, no extra model needed.
"""

from __future__ import annotations

from typing import Any

import torch


def score_denoise(flow: Any, x: torch.Tensor, sigma: float,
                  context: Any = None) -> torch.Tensor:
    """``x + σ² ∇_x log p(x)`` (detached); ``x`` as the flow samples it."""
    if sigma <= 0:
        return x
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        lp = flow.log_prob(xg, context)
        (grad,) = torch.autograd.grad(lp.sum(), xg)
    return (xg + sigma ** 2 * grad).detach()


def denoise_sigma(spec: Any) -> float | None:
    """σ of the denoising step the spec asks for (``sample.denoise``), else None."""
    if spec is None or not (getattr(spec, "sample", None) or {}).get("denoise"):
        return None
    from flowspec.objectives import objective_params

    sigma = float(objective_params(spec).get("noise", 0.0) or 0.0)
    return sigma or None


def sample(flow: Any, n: int, *, temperature: float = 1.0, context: Any = None
           ) -> torch.Tensor:
    """``flow.sample``, then the spec's denoising step when it asks for one."""
    x = flow.sample(n, temperature=temperature, context=context)
    sigma = denoise_sigma(getattr(flow, "spec", None))
    if sigma is None:
        return x
    return score_denoise(flow, x, sigma, context)
