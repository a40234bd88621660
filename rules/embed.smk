# Embedding (study 1, stage 2): VAE latents and CLIP text embeddings of the COCO manifest (one rule
# over {modality}), with every backend × thread policy × CPU count of config `embed:`
# (diffscale.experiments.embed_runs), and the scaling table the report shows. Each run's config slice is a param, so editing one
# setting re-runs only the runs that depend on it.

EMBED_MANIFEST = f"{COCO_DIR}/manifest.parquet"  # rule coco_manifest's outputs
EMBED_SKIPPED = f"{COCO_DIR}/skipped.csv"
EMBED_DIR = vocab.embed_dir("{modality}", vocab.EMBED_RUN)  # a run directory, as a pattern


rule embed:
    input:
        manifest=EMBED_MANIFEST,
        skipped=EMBED_SKIPPED,
    output:
        index=f"{EMBED_DIR}/index.json",
        timing=f"{EMBED_DIR}/timing.json",
        run=f"{EMBED_DIR}/run.json",
    params:
        settings=lambda w: embed_settings(w.modality, w.backend),
        out_dir=lambda w: vocab.embed_run_dir(w.modality, w.backend, w.policy, w.workers),
    threads: embed_threads
    log:
        vocab.log_path(vocab.EMBED_JOB),
    benchmark:
        vocab.benchmark_path(vocab.EMBED_JOB)
    conda:
        "../envs/embed.yaml"
    resources:
        **resources_for(hw=embed_hw, gpus=embed_gpus, cpus=embed_cpus),
    shell:
        "python scripts/embed.py {wildcards.modality} --manifest {input.manifest} --skipped {input.skipped}"
        " --backend {wildcards.backend} --policy {wildcards.policy} --workers {wildcards.workers}"
        " --cpus {resources.cpus_per_task} --settings {params.settings:q} --out-dir {params.out_dir} > {log} 2>&1"


rule embed_scaling:
    input:
        embed_timings(),
    output:
        table="results/bench/embed_scaling.csv",
        figure="results/bench/embed_scaling.png",
    log:
        "results/logs/embed/scaling.log",
    conda:
        "../envs/report.yaml"
    resources:
        **cpu_resources(),
    shell:
        "python scripts/embed_scaling.py --timings {input} --out {output.table} --figure {output.figure} > {log} 2>&1"
