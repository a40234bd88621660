# Study 2: FLUX.1-schnell LoRA fine-tuning and inference across hardware.
# Input functions and paths live in rules/common.smk (FLUX_*, flux_*); the logic in diffscale.flux.
#
# A killed flux_lora job resumes: the loop keeps its state in {FLUX_RUN}/resume/last.pt and its
# checkpoints in lora/ and samples/, none of them declared outputs, so Snakemake keeps them when it
# re-runs the job (see diffscale/flux/loop.py).


rule flux_dataset:
    input:
        DATA["subject"]["dir"],
    output:
        directory(FLUX_DATASET),
    params:
        trigger=config["data"]["subject"]["trigger"],
        resolution=config["flux"]["resolution"],
        ratios=" ".join(f"--bucket-ratio {r}" for r in config["flux"]["bucket_ratios"]),
        min_images=config["flux"]["min_images"],
    log:
        "results/logs/flux/dataset.log",
    conda:
        "../envs/flux.yaml"
    resources:
        **cpu_resources(),
    shell:
        "python scripts/flux_dataset.py --images {input} --trigger {params.trigger:q} --out {output}"
        " --resolution {params.resolution} {params.ratios} --min-images {params.min_images} > {log} 2>&1"


rule flux_cache:
    input:
        FLUX_DATASET,
    output:
        directory(FLUX_CACHE),
    params:
        settings=json.dumps(flux_settings.cache_config(config), sort_keys=True),
        device=hwres.compute_device(config, FLUX_CACHE_HW),
        dtype=flux_dtype(FLUX_CACHE_HW),
    log:
        "results/logs/flux/cache.log",
    conda:
        conda_env_for("flux", FLUX_CACHE_HW)
    resources:
        **resources_for(hw=FLUX_CACHE_HW, gpus=1),
    shell:
        "python scripts/flux_cache.py --dataset {input} --settings {params.settings:q} --out {output}"
        " --device {params.device} --dtype {params.dtype} > {log} 2>&1"


rule flux_lora:
    input:
        cache=FLUX_CACHE,
        dataset=FLUX_DATASET,
    output:
        lora=f"{FLUX_RUN}/lora.safetensors",
        metrics=f"{FLUX_RUN}/metrics.csv",
        quality=f"{FLUX_RUN}/quality.csv",
        timing=f"{FLUX_RUN}/timing.json",
        run=f"{FLUX_RUN}/run.json",
    params:
        run_config=flux_run_config,
        out=lambda wildcards, output: os.path.dirname(output.run),
    threads: flux_threads
    log:
        vocab.log_path(vocab.FLUX_JOB),
    benchmark:
        vocab.benchmark_path(vocab.FLUX_JOB)
    conda:
        conda_env_for("flux")
    resources:
        **resources_for(),
    shell:
        "python scripts/flux_lora.py --run-config {params.run_config:q} --cache {input.cache}"
        " --dataset {input.dataset} --out {params.out} --resume > {log} 2>&1"


rule flux_infer:
    input:
        lora=flux_infer_lora,
    output:
        table=f"{FLUX_INFER}/infer.csv",
        run=f"{FLUX_INFER}/run.json",
    params:
        settings=lambda wildcards: json.dumps(flux_settings.infer_config(config, wildcards.hw), sort_keys=True),
        out=lambda wildcards, output: os.path.dirname(output.table),
    threads: flux_infer_threads
    log:
        "results/logs/flux/infer/{hw}.log",
    conda:
        conda_env_for("flux")
    resources:
        **resources_for(gpus=1),
    shell:
        "python scripts/flux_infer.py --settings {params.settings:q} --lora {input.lora}"
        " --out {params.out} > {log} 2>&1"


rule flux_tables:
    input:
        runs=expand(f"{FLUX_RUN}/run.json", zip, **flux_run_wildcards()),
        metrics=expand(f"{FLUX_RUN}/metrics.csv", zip, **flux_run_wildcards()),
        quality=expand(f"{FLUX_RUN}/quality.csv", zip, **flux_run_wildcards()),
        infer=expand(f"{FLUX_INFER}/infer.csv", hw=flux_infer_hardware()),
    output:
        tables=FLUX_TABLES,
        grid=FLUX_GRID,
    params:
        runs=lambda wildcards, input: [os.path.dirname(p) for p in input.runs],
        infer=lambda wildcards, input: [os.path.dirname(p) for p in input.infer],
        out_dir=lambda wildcards, output: os.path.dirname(output.grid),
    log:
        "results/logs/flux/tables.log",
    conda:
        "../envs/flux.yaml"
    resources:
        **cpu_resources(),
    shell:
        "python scripts/flux_table.py --runs {params.runs} --infer {params.infer} --out-dir {params.out_dir}"
        " --grid {output.grid} > {log} 2>&1"
