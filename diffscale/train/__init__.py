"""Study 1, stage 3: a text-conditioned U-Net trained on the cached embeddings, and sampling from it.

  config.py     what one training run reads (its run config) and the checks on it
  data.py       caption/latent pairs over the embedding shards; the step-indexed batch order
  diffusion.py  the DDPM noise schedule, per-step noise, samplers, classifier-free guidance
  text.py       prompt encoding shared by training (the empty prompt) and generation
  core/         the shared training core every loop builds on (launch, precision, checkpoint,
                guards, meter, flops); it imports no study, so the FLUX and DDPM loops use it too
  checkpoint.py the U-Net's checkpoint format, resume compatibility, weight-shape checks
  unet.py       the training loop (single process, torchrun or mp.spawn DDP) on the core
  flops.py      the U-Net's training FLOPs per sample (MFU)
  generate.py   prompts -> images with a trained run directory
  summary.py    the study table, loss curves and the sample grid of the report
  synthetic.py  embedding runs with random contents, for tests and the benchmark
"""
