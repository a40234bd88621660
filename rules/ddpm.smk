# Study 3: the CIFAR-10 DDPM training-optimisation study. CIFAR-10 is decoded once into a uint8
# array; every other job measures one window of the loop (diffscale.ddpm.loop) at one point of a
# sweep and writes results/ddpm/<stage>/<hw>/<variant>/{run.json,row.csv,loss.csv}; the table rule
# turns each sweep into results/bench/ddpm_<stage>.csv. Paths and input functions: rules/common.smk
# (DDPM_*, ddpm_*); the logic: diffscale.ddpm. The run config in params makes an edit of anything a
# job reads re-run that job, and nothing else.


rule ddpm_data:
    input:
        DATA["cifar"],
    output:
        cache=DDPM_CACHE,
        info=DDPM_CACHE_INFO,
    log:
        "results/logs/ddpm/data.log",
    conda:
        "../envs/ddpm.yaml"
    resources:
        **cpu_resources(),
    shell:
        "python scripts/ddpm_data.py --source {input} --out {output.cache} > {log} 2>&1"


# batch size x GPUs (the per-device batch; the global batch is batch x gpus, the study's setting)
rule ddpm_batch:
    input:
        cache=DDPM_CACHE,
        step_images=ddpm_step_images(),  # every window inherits this input (use rule … with)
    output:
        run=f"{DDPM_RUN['batch']}/run.json",
        row=f"{DDPM_RUN['batch']}/row.csv",
        loss=f"{DDPM_RUN['batch']}/loss.csv",
    params:
        run_config=ddpm_run_config("batch"),
        source=ddpm_source_flag(),
        out=lambda wildcards, output: os.path.dirname(output.run),
    wildcard_constraints:
        batch=r"\d+",
    threads: ddpm_threads()
    log:
        "results/logs/ddpm/batch/{hw}/b{batch}-g{gpus}.log",
    benchmark:
        "results/benchmarks/ddpm/batch/{hw}/b{batch}-g{gpus}.tsv"
    conda:
        conda_env_for("ddpm")
    resources:
        **ddpm_resources(),
    shell:
        "python scripts/ddpm_run.py --run-config {params.run_config:q} --cache {input.cache} {params.source}"
        " --out {params.out} > {log} 2>&1"


# precision: fp32 (TF32 off), tf32, bf16 autocast, fp16 autocast + GradScaler
use rule ddpm_batch as ddpm_amp with:
    output:
        run=f"{DDPM_RUN['amp']}/run.json",
        row=f"{DDPM_RUN['amp']}/row.csv",
        loss=f"{DDPM_RUN['amp']}/loss.csv",
    params:
        run_config=ddpm_run_config("amp"),
        source=ddpm_source_flag(),
        out=lambda wildcards, output: os.path.dirname(output.run),
    wildcard_constraints:
        precision=DDPM_PRECISION_RE,
    log:
        "results/logs/ddpm/amp/{hw}/{precision}.log",
    benchmark:
        "results/benchmarks/ddpm/amp/{hw}/{precision}.tsv"
    resources:
        **ddpm_resources(),


# DataLoader workers, with the time the loop waited for data per step
use rule ddpm_batch as ddpm_workers with:
    output:
        run=f"{DDPM_RUN['workers']}/run.json",
        row=f"{DDPM_RUN['workers']}/row.csv",
        loss=f"{DDPM_RUN['workers']}/loss.csv",
    params:
        run_config=ddpm_run_config("workers"),
        source=ddpm_source_flag(),
        out=lambda wildcards, output: os.path.dirname(output.run),
    wildcard_constraints:
        workers=r"\d+",
    log:
        "results/logs/ddpm/workers/{hw}/w{workers}.log",
    benchmark:
        "results/benchmarks/ddpm/workers/{hw}/w{workers}.tsv"
    resources:
        **ddpm_resources(),


# torch.compile mode (off is always measured: the break-even needs it)
use rule ddpm_batch as ddpm_compile with:
    output:
        run=f"{DDPM_RUN['compile']}/run.json",
        row=f"{DDPM_RUN['compile']}/row.csv",
        loss=f"{DDPM_RUN['compile']}/loss.csv",
    params:
        run_config=ddpm_run_config("compile"),
        source=ddpm_source_flag(),
        out=lambda wildcards, output: os.path.dirname(output.run),
    wildcard_constraints:
        compile=DDPM_COMPILE_RE,
    log:
        "results/logs/ddpm/compile/{hw}/{compile}.log",
    benchmark:
        "results/benchmarks/ddpm/compile/{hw}/{compile}.tsv"
    resources:
        **ddpm_resources(),


# torch.profiler over the baseline's window: top-10 operators by device and CPU time, Chrome trace
use rule ddpm_batch as ddpm_profile with:
    output:
        run=f"{DDPM_RUN['profile']}/run.json",
        row=f"{DDPM_RUN['profile']}/ops.csv",
        loss=f"{DDPM_RUN['profile']}/loss.csv",
        trace=f"{DDPM_RUN['profile']}/trace.json.gz",
    params:
        run_config=ddpm_run_config("profile"),
        source=ddpm_source_flag(),
        out=lambda wildcards, output: os.path.dirname(output.run),
    log:
        "results/logs/ddpm/profile/{hw}.log",
    benchmark:
        "results/benchmarks/ddpm/profile/{hw}.tsv"
    threads: ddpm_threads(1)
    resources:
        **ddpm_resources(1),


# our loop against denoising-diffusion-pytorch's GaussianDiffusion step, same model and settings;
# a peer that cannot be imported gives a row with its status instead of a number
use rule ddpm_batch as ddpm_peer with:
    output:
        run=f"{DDPM_RUN['peer']}/run.json",
        row=f"{DDPM_RUN['peer']}/row.csv",
        loss=f"{DDPM_RUN['peer']}/loss.csv",
    params:
        run_config=ddpm_run_config("peer"),
        source=ddpm_source_flag(),
        out=lambda wildcards, output: os.path.dirname(output.run),
    wildcard_constraints:
        precision=DDPM_PRECISION_RE,
        compile=DDPM_COMPILE_RE,
    log:
        "results/logs/ddpm/peer/{hw}/{precision}-{compile}.log",
    benchmark:
        "results/benchmarks/ddpm/peer/{hw}/{precision}-{compile}.tsv"
    threads: ddpm_threads(1)
    resources:
        **ddpm_resources(1),


rule ddpm_table:
    input:
        ddpm_table_inputs,
    output:
        "results/bench/ddpm_{stage}.csv",
    params:
        runs=lambda wildcards, input: [os.path.dirname(p) for p in input],
        train_steps=DDPM["train_steps"],
        inception=ddpm_inception_flag(),
    wildcard_constraints:
        stage="|".join(experiments.DDPM_TABLES),
    log:
        "results/logs/ddpm/table_{stage}.log",
    conda:
        "../envs/ddpm.yaml"
    resources:
        **cpu_resources(),
    shell:
        "python scripts/ddpm_table.py --stage {wildcards.stage} --runs {params.runs} --out {output}"
        " --train-steps {params.train_steps} {params.inception} > {log} 2>&1"
