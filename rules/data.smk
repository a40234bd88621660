# Data: the embedded demo's synthetic inputs (only when config has data.synthetic), and a summary
# of the inputs the studies read.


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
