# The report: reads only results/bench/*.csv, the figures and the runs' provenance JSON.
# Its figures also go to results/report/<study>/, marked for Snakemake's own report
# (snakemake --report results/report.zip) with the captions in report/<study>.rst; its input
# functions and REPORT_STUDIES are in common.smk.

rule model_inventory:
    output:
        "results/bench/models.csv",
    params:
        models=json.dumps(config["models"], sort_keys=True),
    log:
        "results/logs/report/model_inventory.log",
    conda:
        "../envs/report.yaml"
    resources:
        **cpu_resources(),
    shell:
        "python scripts/model_inventory.py --models {params.models:q} --out {output} > {log} 2>&1"


rule report:
    input:
        report_inputs(),
    output:
        html=report("results/report.html", caption="../report/report.rst", category="Report"),
        **{
            study: report(
                directory(f"results/report/{study}"),
                patterns=["{name}.png"],
                caption=f"../report/{study}.rst",
                category=title,
                labels={"figure": "{name}"},
            )
            for study, title in REPORT_STUDIES.items()
        },
    params:
        hardware=json.dumps(config["hardware"], sort_keys=True),
        price_source=config_sources(),
        demo="--demo" if config["data"].get("synthetic") else "",
        unfinished=report_unfinished,
    log:
        "results/logs/report/report.log",
    conda:
        "../envs/report.yaml"
    resources:
        **cpu_resources(),
    shell:
        "python scripts/report.py --results results --out {output.html} --figures results/report"
        " --hardware {params.hardware:q} --price-source {params.price_source:q} {params.demo} {params.unfinished}"
        " > {log} 2>&1"
