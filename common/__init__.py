"""The shared package of the 30-Day Diffusion & Flow Matching Challenge: nouns and small verbs.

Vocabulary, used by every module and every day (written once, here and in the root README):

    x0      clean data; images live in [-1, 1] inside models, shape (B, C, H, W)
    eps     standard Gaussian noise, eps ~ N(0, I)
    t       time in [0, 1]; t = 0 is data, t = 1 is noise (diffusion and flow days alike)
    xt      the noisy state, xt = alpha_t * x0 + sigma_t * eps
    alpha_t, sigma_t   signal and noise scales (DDPM: sqrt(ᾱ_t) and sqrt(1 − ᾱ_t))
    n_steps the number of discrete noise levels T of a schedule; level i sits at t = i / T
    prediction         what a network outputs: "eps", "x0" or "v" (adapters in common.diffusion)

Modules
    config     typed configs, presets and the shared command line; UserError
    data       image datasets by name, with the offline MNIST fallback
    toy2d      2-D toy distributions, the exact 8-Gaussians mixture
    nets       time embeddings, residual blocks, attention, the U-Net, a 2-D MLP
    diffusion  schedules, q(x_t | x_0), the posterior, parameterisations, the DDPM sampler
    training   devices, seeds, EMA, LR schedule, checkpoints
    loop       the training loop (resume, NaN guard, DDP) and metrics.json
    plotting   grids, GIFs, curves, 2-D scatter/trajectory/vector-field plots
    evaluator, metrics, samples, evaluate   the one evaluation protocol
"""
