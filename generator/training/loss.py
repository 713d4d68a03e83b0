"""The training objectives: stage I's generator and discriminator losses (Sec. 3.1) and the WGAN losses of
stage II's mappings (Sec. 3.2). The training loops (``stage1.py``, ``stage2.py``) own the networks, optimisers
and steps; these classes compute the losses from them."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from generator.eval.image_metrics import ssim_map
from generator.training.identity import IdentityTerm, remix


@contextmanager
def running_stats_kept(module: nn.Module) -> Iterator[None]:
    """Batch-norm layers of ``module`` normalise by their batch as usual, but leave their running statistics
    unchanged (momentum 0) inside the block."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    try:
        for m in norms:
            m.momentum = 0.0
        yield
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


def ssim_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """1 - SSIM of ``fake`` against ``real`` ((B, 3, H, W) in [-1, 1]; the metric's window and valid part), the batch's
    mean, in float32. The reconstruction is not clamped, so its gradient reaches every pixel."""
    return 1 - ssim_map((fake.float() + 1) / 2, (real.float() + 1) / 2, exact=False).mean()


class Stage1Loss:
    """Stage I's objective. The generator's: ``l1_weight`` x the L1 reconstruction loss, plus ``adv_weight`` x the
    DCGAN adversarial loss from step ``l1_only_steps`` on, plus (in that phase too) ``fm_weight`` x the feature
    matching loss (beyond the paper, as in pix2pixHD: the mean L1 distance between the discriminator's activations
    on the real image and on its reconstruction, averaged over its 4 blocks), plus ``ssim_weight`` x the SSIM loss
    (beyond the paper, as in Zhao et al. 2017: 1 - the SSIM of the reconstruction against the real image, the
    metric's own definition, in float32), plus ``id_weight`` x the identity
    loss on remixes (``generator.training.identity``) from step ``id_start`` on, when ``ident`` is given. The
    discriminator's: the DCGAN loss on real images and the generator's fakes.

    ``autocast``: a callable returning the context the forward passes run in (``Runtime.autocast``)."""

    def __init__(self, device: torch.device, autocast: Callable[[], ContextManager], l1_weight: float = 20.0,
                 adv_weight: float = 1.0, l1_only_steps: int = 0, id_weight: float = 0.0, id_start: int = 0,
                 ident: IdentityTerm | None = None, fm_weight: float = 0.0, ssim_weight: float = 0.0):
        self.device, self.autocast = device, autocast
        self.ssim_weight = ssim_weight
        self.l1_weight, self.adv_weight, self.l1_only_steps = l1_weight, adv_weight, l1_only_steps
        self.fm_weight = fm_weight
        self.id_weight, self.id_start, self.ident = id_weight, id_start, ident

    def adversarial(self, step: int) -> bool:
        """Whether step ``step`` has the adversarial terms (and so a discriminator step)."""
        return step >= self.l1_only_steps and self.adv_weight > 0

    def generator(self, G: nn.Module, D: nn.Module, batch: dict, step: int, Gd: nn.Module | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(total loss, fake images, terms): the generator's loss on ``batch`` at step ``step``. ``Gd`` (default
        ``G``) reconstructs the batch (the DDP wrapper of ``G``), ``G`` decodes the remixes; ``D`` is expected
        frozen. The terms: ``l1``, ``g_adv`` (zero before the adversarial phase), with ``fm_weight`` > 0 ``g_fm``
        (zero before it too) and, with an identity term, ``g_id`` (zero before ``id_start``)."""
        real = batch["image"]
        zero = torch.zeros((), device=self.device)
        with self.autocast():
            fake, fg, bg = (G if Gd is None else Gd)(real, batch["pose_mask"], batch["roi_boxes"],
                                                     batch["roi_visible"], batch["pose_maps"])
            l1 = (fake.float() - real).abs().mean()
            g_adv, g_fm = self.adversarial_terms(D, real, fake) if self.adversarial(step) else (zero, zero)
            g_id = (self.ident.loss(remix(G, batch, fg, bg), batch)
                    if self.ident is not None and step >= self.id_start else zero)
            total = self.l1_weight * l1 + self.adv_weight * g_adv + self.fm_weight * g_fm + self.id_weight * g_id
        if self.ssim_weight > 0:  # outside autocast: the moments need float32
            d_ssim = ssim_loss(fake, real)
            total = total + self.ssim_weight * d_ssim
        terms = {"l1": l1, "g_adv": g_adv}
        if self.ssim_weight > 0:
            terms["d_ssim"] = d_ssim
        if self.fm_weight > 0:
            terms["g_fm"] = g_fm
        if self.ident is not None:
            terms["g_id"] = g_id
        return total, fake, terms

    def adversarial_terms(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the generator's DCGAN loss on ``fake``, the feature-matching loss of ``fake`` against ``real``; zero
        with ``fm_weight`` 0). The real images' activations are targets: no gradient flows through them, and the
        pass that computes them leaves D's batch-norm running statistics as they were (the D that ships, and the
        builder's quality filter, run D in eval mode on them)."""
        ones = torch.ones(len(real), device=self.device)
        if self.fm_weight <= 0:
            return F.binary_cross_entropy_with_logits(D(fake).float(), ones), torch.zeros((), device=self.device)
        logit, feats = D.features(fake)
        with torch.no_grad(), running_stats_kept(D):
            _, targets = D.features(real)
        fm = torch.stack([(f.float() - t.float()).abs().mean() for f, t in zip(feats, targets, strict=True)]).mean()
        return F.binary_cross_entropy_with_logits(logit.float(), ones), fm

    def discriminator(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """The discriminator's loss: the mean of its binary cross-entropies on ``real`` (label 1) and on ``fake``
        (label 0, detached). Real and fake go through ``D`` in separate calls: batch-norm statistics per call, as
        officially."""
        with self.autocast():
            ones, zeros = torch.ones(len(real), device=self.device), torch.zeros(len(real), device=self.device)
            return (F.binary_cross_entropy_with_logits(D(real).float(), ones)
                    + F.binary_cross_entropy_with_logits(D(fake.detach()).float(), zeros)) / 2


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's penalty: the mean of (|grad critic| - 1)^2 at random interpolations of ``real`` and ``fake``."""
    a = torch.rand(len(real), 1, device=real.device)
    x = (a * real + (1 - a) * fake).requires_grad_(True)
    g, = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return ((g.norm(dim=1) - 1) ** 2).mean()


class Stage2Loss:
    """The WGAN losses of a stage-II mapping and its critic: ``objective`` wgan (the critic's weights clipped by
    the loop), or wgan-gp (``gp_weight`` x the gradient penalty in the critic's loss)."""

    def __init__(self, objective: str = "wgan", gp_weight: float = 10.0):
        self.objective, self.gp_weight = objective, gp_weight

    def critic(self, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """The critic's loss: its mean score of ``fake`` minus that of ``real`` (with wgan-gp, plus the penalty)."""
        loss = critic(fake).mean() - critic(real).mean()
        if self.objective == "wgan-gp":
            loss = loss + self.gp_weight * gradient_penalty(critic, real, fake)
        return loss

    def mapping(self, critic: nn.Module, fake: torch.Tensor) -> torch.Tensor:
        """The mapping's loss: minus the critic's mean score of its outputs ``fake``."""
        return -critic(fake).mean()

    def distance(self, loss_c: torch.Tensor, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> float:
        """The Wasserstein estimate on the critic's last batch: minus its loss ``loss_c`` (wgan); with wgan-gp,
        whose loss holds the penalty, the critic's score difference measured again."""
        if self.objective == "wgan":
            return -float(loss_c.detach())
        return -float((critic(fake).mean() - critic(real).mean()).detach())
