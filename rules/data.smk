# Data: the embedded demo's synthetic inputs (only when config has data.synthetic), a summary
# of the inputs the studies read, and the COCO people-centric manifest (study 1, stage 1).


if SYNTHETIC:

    rule synthetic_coco:
        output:
            captions=DATA["coco"]["captions"],
            images=directory(DATA["coco"]["images"]),
        params:
            n=SYNTHETIC["coco_images"],
            people=SYNTHETIC["people_fraction"],
            seed=config["seed"],
        log:
            "results/logs/data/synthetic_coco.log",
        conda:
            "../envs/data.yaml"
        resources:
            **cpu_resources(),
        shell:
            "python scripts/make_demo_data.py coco --captions {output.captions} --images {output.images}"
            " --n {params.n} --people-fraction {params.people} --seed {params.seed} > {log} 2>&1"

    rule synthetic_cifar:
        output:
            directory(DATA["cifar"]),
        params:
            per_class=SYNTHETIC["cifar_per_class"],
            seed=config["seed"],
        log:
            "results/logs/data/synthetic_cifar.log",
        conda:
            "../envs/data.yaml"
        resources:
            **cpu_resources(),
        shell:
            "python scripts/make_demo_data.py cifar --out {output} --per-class {params.per_class}"
            " --seed {params.seed} > {log} 2>&1"

    rule synthetic_subject:
        output:
            directory(DATA["subject"]["dir"]),
        params:
            n=SYNTHETIC["subject_images"],
            seed=config["seed"],
        log:
            "results/logs/data/synthetic_subject.log",
        conda:
            "../envs/data.yaml"
        resources:
            **cpu_resources(),
        shell:
            "python scripts/make_demo_data.py subject --out {output} --n {params.n}"
            " --seed {params.seed} > {log} 2>&1"


rule data_summary:
    input:
        captions=DATA["coco"]["captions"],
        cifar=DATA["cifar"],
        subject=DATA["subject"]["dir"],
    output:
        "results/data/summary.json",
    params:
        images=DATA["coco"]["images"] or "",
    log:
        "results/logs/data/summary.log",
    conda:
        "../envs/data.yaml"
    resources:
        **cpu_resources(),
    shell:
        "python scripts/make_demo_data.py summary --captions {input.captions} --images '{params.images}'"
        " --cifar {input.cifar} --subject {input.subject} --out {output} > {log} 2>&1"


# Study 1, stage 1: label every COCO image from its captions, keep the people-centric ones and
# profile them (diffscale.data.coco / .people / .demographics).
rule coco_manifest:
    input:
        **coco_inputs(),
    output:
        manifest=f"{COCO_DIR}/manifest.parquet",
        labels=f"{COCO_DIR}/labels_all.parquet",
        demographics=f"{COCO_DIR}/demographics.csv",
        skipped=f"{COCO_DIR}/skipped.csv",
        run=f"{COCO_DIR}/run.json",
        table=COCO_FILTER_TABLE,
        figures=COCO_FILTER_FIGURES,
    params:
        people=json.dumps(DATA["people"], sort_keys=True),
        images=lambda wildcards, input: getattr(input, "images", ""),
        instances=lambda wildcards, input: getattr(input, "instances", ""),
        out_dir=lambda wildcards, output: os.path.dirname(output.manifest),
        bench_dir=lambda wildcards, output: os.path.dirname(output.table),
    log:
        "results/logs/data/coco_manifest.log",
    benchmark:
        "results/benchmarks/data/coco_manifest.tsv"
    conda:
        "../envs/data.yaml"
    resources:
        **cpu_resources(),
    shell:
        "python scripts/filter_coco.py --captions {input.captions} --images '{params.images}'"
        " --instances '{params.instances}' --people {params.people:q} --out-dir {params.out_dir}"
        " --bench-dir {params.bench_dir} > {log} 2>&1"
