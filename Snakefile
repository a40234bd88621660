# diffscale: how diffusion-model workloads scale across hardware.
# Demo:    snakemake --cores all
# Cluster: snakemake --profile profiles/slurm results/report.html   (uses config/full.yaml)
from snakemake.utils import min_version

min_version("9.0")


# The demo config, unless configs are given on the command line (the SLURM profile gives
# config/full.yaml): those replace it rather than merge into it, and identically in every cluster
# job (Snakemake does not pass --replace-workflow-config on to the jobs it submits).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/report.smk"
include: "rules/hardware.smk"


rule all:
    default_target: True
    input:
        "results/report.html",
