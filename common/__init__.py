"""The shared package of the 30-Day Diffusion & Flow Matching Challenge: nouns and small verbs.

Vocabulary, used by every module and every day (written once, here and in the root README):

    x0      clean data; images live in [-1, 1] inside models, shape (B, C, H, W)
    eps     standard Gaussian noise, eps ~ N(0, I)
    t       time in [0, 1]; t = 0 is data, t = 1 is noise on every path, diffusion and flow alike
            (flow-matching papers write data at t = 1: here their x_1 is x0, and no noise is called x1)
    xt      the noisy state on an affine path, xt = alpha_t * x0 + sigma_t * eps
    alpha_t, sigma_t   signal and noise scales (DDPM: sqrt(ᾱ_t) and sqrt(1 − ᾱ_t); flow matching: 1 − t and t)
    path    the forward process: alpha(t), sigma(t), their derivatives, log-SNR (common.paths)
    n_steps the number of discrete noise levels T of a DDPM schedule; level i sits at t = i / T
    prediction         what a network outputs: "eps", "x0", "v", "velocity" (dxt/dt) or "score"
    denoiser           a function (xt, t, **cond) -> Pair(x0, eps): any prediction through its adapter
    sampler            a generator sampler(denoiser, x, ts, *, path, ...) yielding each state along the grid ts
    FID, floor         Fréchet distance of the evaluator's 128-d features (not Inception's): comparable only within
                       this repository, at equal sample count n. The floor is the FID of real held-out images at the
                       same n; results report fid_ratio = FID / floor (1: as close to the data as real images)

Modules
    config     typed (nested) configs, presets, YAML files and the shared command line; UserError
    data       image datasets by name, with the offline MNIST fallback
    toy2d      2-D toy distributions, the exact 8-Gaussians mixture
    nets       time embeddings, residual blocks, attention, the U-Net, a 2-D MLP; the model registry
    paths        affine forward processes (DDPM schedules, VP-cosine, linear, VE) and time grids
    predictions  adapters from any prediction to (x̂0, ε̂); denoiser wrappers (clipping, thresholding, guidance)
    samplers     DDPM, DDIM, Euler and Heun as generators over one public step each; batched drawing
    denoisers    exact denoisers (Gaussian mixtures, finite datasets) that stand in for networks as oracles
    diffusion    training objectives: the denoising loss, Min-SNR weights, the prior KL term
    training   the recipe's nouns: TrainConfig, per-step generators, LR schedule, EMA
    loop       the training loop (batches, resume, NaN guard, DDP) and its checkpoint payload
    checkpoint checkpoint files (atomic write, safe read) and rebuilding a network from one
    run        a run's bookkeeping: process group and device, OUT/config.yaml, metrics.json
    syllabus   the root README's table of days, each implemented day's row read from its metrics.json
    leaderboard  the root README's table of every image generator's settings, ranked by FID / floor
    plotting   grids, GIFs, curves, 2-D scatter/trajectory/vector-field plots
    evaluator, metrics, samples, evaluate   the one evaluation protocol
"""
