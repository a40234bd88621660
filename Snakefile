# diffscale: how diffusion-model workloads scale across hardware.
# Demo:    snakemake --cores all
# Cluster: snakemake --profile profiles/slurm results/report.html   (uses config/full.yaml)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        "results/report.html",
