# The report: reads only results/bench/*.csv, the figures and the runs' provenance JSON.


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
        "results/report.html",
    log:
        "results/logs/report/report.log",
    conda:
        "../envs/report.yaml"
    resources:
        **cpu_resources(),
    shell:
        "python scripts/report.py --results results --out {output} > {log} 2>&1"
