# diffscale: how diffusion-model workloads scale across hardware.
# Demo:    snakemake --cores all
# Cluster: snakemake --profile profiles/slurm results/report.html   (uses config/full.yaml)
import sys

from snakemake.utils import min_version

min_version("9.0")


# The demo config, unless the command line gives a complete one (the SLURM profile gives
# config/full.yaml): that replaces config.yaml instead of being merged onto it, in this process
# and in every cluster job alike (jobs are not passed --replace-workflow-config). A partial config
# on the command line is an overlay on the demo, as usual.
sys.path.insert(0, workflow.basedir)
from diffscale.workflow import is_complete_config, replace_overlay_models

if not is_complete_config(workflow.config_settings.overwrite_config):

    configfile: "config.yaml"

    replace_overlay_models(config, workflow.config_settings.overwrite_config)


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/embed.smk"
include: "rules/train.smk"
include: "rules/flux.smk"
include: "rules/ddpm.smk"
include: "rules/report.smk"
include: "rules/hardware.smk"


# Cheap jobs that only read the runs' small outputs (the tables, the sample grid, the report) run
# where Snakemake runs: as cluster jobs each would wait in the queue for seconds of work.
localrules:
    all,
    preflight,
    embed_scaling,
    train_unet_table,
    samples,
    flux_tables,
    ddpm_table,
    report,


rule all:
    default_target: True
    input:
        "results/report.html",
