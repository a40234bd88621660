"""What the report is made of: its study sections, and the tables it reads from the FLUX and DDPM
studies (the study/report table contract), by study. Light on purpose: the Snakefile imports it.

rules/report.smk asks for a study's files only where a rule of the workflow makes them, so the
report builds before a study's rules exist and picks its tables up once they do.
"""

from __future__ import annotations

BENCH = "results/bench"

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


def study_tables(cfg: dict) -> list[str]:
    """results/bench paths of every contract file of the studies `cfg` configures."""
    return [f"{BENCH}/{name}" for study, names in STUDY_FILES.items() if cfg.get(study) for name in names]
