"""Study 3: the CIFAR-10 DDPM training-optimisation study.

  data.py      CIFAR-10 from the python batches (archive or folder) or an image folder, decoded once
               into a cached uint8 array; the step-indexed batch order with flips; the DataLoader
  loop.py      the training loop, run for a measured window (launch, precision, compile, meter)
  sweeps.py    what one run reads and writes; the study's tables (results/bench/ddpm_*.csv)
  profiler.py  torch.profiler over a window: top operators by device and CPU time, a Chrome trace
  peer.py      denoising-diffusion-pytorch's GaussianDiffusion step on the same model and settings
  fid.py       FID of EMA samples, only with local Inception weights (never a random-network FID)
"""
