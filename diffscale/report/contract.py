"""What the report is made of: its study sections, and the files it reads from the FLUX and DDPM
studies (the study/report table contract). Light on purpose: rules/report.smk imports it.

Which of these files the report rule asks for is the studies' business: each adds its own
`<study>_report_inputs()` to `report_inputs()` in rules/common.smk (only the tables its config
makes, e.g. no peer table when the peer is off). The report reads whatever is there and announces
a study whose tables are absent in one line.
"""

from __future__ import annotations

# The study sections, in reading order: id (the anchor, and the Snakemake report's figure folder) → title.
TITLES = {
    "coco": "Study 1 · COCO people-centric filtering",
    "embed": "Study 1 · Embedding across parallel backends",
    "train": "Study 1 · Text-conditioned U-Net training",
    "flux": "Study 2 · FLUX.1-schnell LoRA across hardware",
    "ddpm": "Study 3 · CIFAR-10 DDPM training optimisations",
}


STUDY_FILES = {
    "flux": ["flux_train.csv", "flux_loss.csv", "flux_quality.csv", "flux_infer.csv", "flux_samples.png"],
    "ddpm": ["ddpm_profile.csv", "ddpm_batch.csv", "ddpm_amp.csv", "ddpm_workers.csv", "ddpm_compile.csv",
             "ddpm_peer.csv"],
}

