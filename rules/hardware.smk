# Preflight: one cheap job per hardware key the studies use, on its partition, with the most GPUs a
# study job there asks for, in the env the training jobs there use. It proves the partition, the
# GPU request and the env's PyTorch build (a kernel runs on every GPU), and its run.json puts each
# partition's node, GPUs and CPU in the report. No study job waits for it (an edit of a check would
# re-run them all): `snakemake --profile profiles/slurm preflight` runs the checks alone, first.


rule hardware_check:
    output:
        "results/hardware/check/{hw}/g{gpus}/run.json",
    params:
        entry=hardware_entry_json,
    log:
        "results/logs/hardware/check/{hw}/g{gpus}.log",
    conda:
        conda_env_for("train")
    resources:
        **resources_for(),
    shell:
        "python scripts/hardware_check.py --hw {wildcards.hw} --gpus {wildcards.gpus}"
        " --hardware {params.entry:q} --out {output} > {log} 2>&1"


rule preflight:
    input:
        hardware_checks(),
