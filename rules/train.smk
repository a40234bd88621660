# Study 1, stage 3: the text-conditioned U-Net trained on the cached embeddings, sampled, tabulated.
# Input functions and paths live in rules/common.smk (TRAIN_RUN, train_*); the logic in diffscale.train.
#
# A killed training job resumes: the loop checkpoints to {TRAIN_RUN}/resume/last.pt, which is not a
# declared output, so Snakemake does not delete it before re-running the job (see
# diffscale/train/checkpoint.py). The run config in params makes an edit of anything the job reads
# re-run it; a checkpoint made under other settings is then not resumed.


rule train_unet:
    input:
        **embed_train_source(),
    output:
        checkpoint=f"{TRAIN_RUN}/checkpoint.pt",
        metrics=f"{TRAIN_RUN}/metrics.csv",
        config=f"{TRAIN_RUN}/config.json",
        run=f"{TRAIN_RUN}/run.json",
    params:
        run_config=train_run_config,
        images=lambda wildcards, input: os.path.dirname(input.images),
        text=lambda wildcards, input: os.path.dirname(input.text),
        out=lambda wildcards, output: os.path.dirname(output.checkpoint),
    threads: train_threads
    log:
        vocab.log_path(vocab.TRAIN_JOB),
    benchmark:
        vocab.benchmark_path(vocab.TRAIN_JOB)
    conda:
        conda_env_for("train")
    resources:
        **resources_for(workers=train_processes),
    shell:
        "python scripts/train_unet.py --run-config {params.run_config:q} --images {params.images}"
        " --text {params.text} --out {params.out} --resume > {log} 2>&1"


rule train_unet_table:
    input:
        runs=expand(f"{TRAIN_RUN}/run.json", zip, **train_run_wildcards()),
        metrics=expand(f"{TRAIN_RUN}/metrics.csv", zip, **train_run_wildcards()),
    output:
        table="results/bench/train_unet.csv",
        loss="results/bench/train_unet_loss.png",
    params:
        runs=lambda wildcards, input: [os.path.dirname(p) for p in input.runs],
    log:
        "results/logs/train/train_unet_table.log",
    conda:
        "../envs/train.yaml"
    resources:
        **cpu_resources(),
    shell:
        "python scripts/train_unet_table.py --runs {params.runs} --table {output.table}"
        " --loss-figure {output.loss} > {log} 2>&1"


rule generate_unet_samples:
    input:
        checkpoint=lambda wildcards: f"{sampled_run(wildcards)}/checkpoint.pt",
        config=lambda wildcards: f"{sampled_run(wildcards)}/config.json",
    output:
        directory(TRAIN_SAMPLES),
    params:
        sampling=train_sampling_flags(),
        model=lambda wildcards, input: os.path.dirname(input.checkpoint),
        device=lambda wildcards: hwres.compute_device(config, wildcards.hw),
    log:
        "results/logs/train/samples/{hw}/{precision}-g{run_gpus}.log",
    conda:
        conda_env_for("train")
    resources:
        # sampled on the hardware it was trained on, on one device of it (one job per run)
        **resources_for(gpus=1),
    shell:
        "python scripts/generate.py {params.sampling} --model-path {params.model}"
        " --device {params.device} --out {output} > {log} 2>&1"


rule samples:
    input:
        train_samples(),
    output:
        "results/bench/train_unet_samples.png",
    log:
        "results/logs/train/samples.log",
    conda:
        "../envs/train.yaml"
    resources:
        **cpu_resources(),
    shell:
        "python scripts/sample_grid.py --samples {input} --out {output} > {log} 2>&1"
