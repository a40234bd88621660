"""Study 2: FLUX.1-schnell LoRA fine-tuning and inference across hardware.

Stages, each a rule in rules/flux.smk and a CLI in scripts/flux_*.py:
  dataset   check a folder of captioned photos, assign aspect-ratio buckets  (dataset.py)
  cache     VAE latents and text conditioning, once per dataset               (cache.py, text.py)
  lora      the LoRA training loop, one run per {hw}/{gpus}/{steps}           (loop.py, lora.py, flow.py)
  infer     time to first image and throughput, base / LoRA / fused          (infer.py, sample.py)
  table     the contract tables results/bench/flux_*.csv and the sample grid (table.py, quality.py)
Settings and vocabularies: settings.py.
"""
