"""Day 03's questions to a trained VAE: how well it reconstructs, how its samples change with the prior's
temperature, and whether class directions in its latent space add up.

    decode_mean         latents -> decoder means as images in [-1, 1]
    reconstruction      PSNR and SSIM of decode(E_q[z | x]) against the grey test images
    held_out            one-sample ELBO terms, active units and reconstruction scores on test images
    latent_arithmetic   z = E_q[z | x] − m_b + m_a moves an image of class b to class a; which class comes out

The decoder mean p = sigmoid(logits) is the probability that a binarised pixel is on, i.e. the expected
binarised pixel, and binarisation draws a pixel on with probability (x + 1) / 2; so 2p − 1 estimates the grey
image x itself, and reconstructions are scored against the grey test images, not their binarised draws.

References:
    Kingma, Mohamed, Rezende & Welling (2014), "Semi-supervised learning with deep generative models",
        NeurIPS (analogies by moving a code's class).
    White (2016), "Sampling generative networks", arXiv:1609.04468 (attribute vectors: the difference of
        the mean latent codes of two groups, added to another code).
    Kingma & Dhariwal (2018), "Glow: generative flow with invertible 1x1 convolutions", NeurIPS
        (temperature: sampling z ~ N(0, τ² I) with τ < 1 trades diversity for quality).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from common.metrics import psnr, ssim
from vae import ConvVAE, active_units, elbo_terms

Tensor = torch.Tensor


@torch.no_grad()
def decode_mean(vae: ConvVAE, z: Tensor) -> Tensor:
    """Latents (N, D) -> decoder means p = sigmoid(logits) as images 2p − 1 in [-1, 1]."""
    return 2 * torch.sigmoid(vae.decode(z)) - 1


@torch.no_grad()
def reconstruction(vae: ConvVAE, x_binary: Tensor, x_grey: Tensor) -> dict:
    """Mean PSNR (dB) and SSIM of decode_mean(E_q[z | x]) for binary inputs x_binary against the grey images
    x_grey (N, 1, 28, 28) in [-1, 1] that they were drawn from."""
    x_hat = decode_mean(vae, vae.encode(x_binary)[0]).cpu()
    x_grey = x_grey.cpu()
    return {"recon_psnr_db": round(float(psnr(x_hat, x_grey).mean()), 2),
            "recon_ssim": round(float(ssim(x_hat, x_grey).mean()), 4)}


@torch.no_grad()
def held_out(vae: ConvVAE, x_binary: Tensor, x_grey: Tensor, seed: int) -> dict:
    """Mean reconstruction −log p(x|z) and KL (one z per image, nats), their ELBO, the active units and the
    reconstruction scores of a VAE on binary test images x_binary drawn from the grey x_grey."""
    recon, kl = elbo_terms(vae, x_binary, torch.Generator().manual_seed(seed))
    n_active, _ = active_units(vae.encode(x_binary)[0])
    return {"recon_nats": round(float(recon.mean()), 2), "kl_nats": round(float(kl.mean()), 2),
            "elbo_nats": round(float(-(recon + kl).mean()), 2), "active_units": n_active,
            **reconstruction(vae, x_binary, x_grey)}


def class_means(mu: Tensor, labels: Tensor, classes: Tensor) -> Tensor:
    """The mean latent code of each class, (C, D), from posterior means mu (N, D) and labels (N,)."""
    return torch.stack([mu[labels == c].mean(dim=0) for c in classes])


@torch.no_grad()
def latent_arithmetic(vae: ConvVAE, x: Tensor, labels: Tensor,
                      classify: Callable[[Tensor], Tensor] | None) -> tuple[Tensor, dict]:
    """Move every image to every class: z = E_q[z | x_i] − m_{y_i} + m_a for each class a (White 2016).

    Returns the decoded images (N, C, 1, 28, 28), C the classes present, and, when a classifier is given
    (images -> predicted class (N,)), how often the result is called class a: `success` over a ≠ y_i, `kept`
    over a = y_i (the image's own reconstruction), and `by_pair`[b][a] for each source class b.
    """
    labels = labels.to(x.device)
    mu = vae.encode(x)[0]                                                   # (N, D)
    classes = labels.unique()                                               # (C,) sorted
    means = class_means(mu, labels, classes)                                # (C, D)
    source = torch.searchsorted(classes, labels)                            # (N,) row of each image's class
    z = mu[:, None] - means[source][:, None] + means[None]                  # (N, C, D)
    images = decode_mean(vae, z.flatten(0, 1)).unflatten(0, z.shape[:2])   # (N, C, 1, 28, 28)
    if classify is None:
        return images, {}
    hit = (classify(images.flatten(0, 1)).to(x.device).view(len(x), -1) == classes[None])  # (N, C)
    own = source[:, None] == torch.arange(len(classes), device=x.device)[None]             # (N, C)
    by_pair = {str(int(b)): [round(float(hit[source == i, j].float().mean()), 3) for j in range(len(classes))]
               for i, b in enumerate(classes)}
    return images, {"classes": classes.tolist(), "success": round(float(hit[~own].float().mean()), 3),
                    "kept": round(float(hit[own].float().mean()), 3), "by_pair": by_pair}
