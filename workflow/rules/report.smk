# Figures and pages for `snakemake --report`: the training curve, the data table and the
# model card. The overlays come from the segment jobs (segment.smk), the metric figures
# from the evaluate rule (evaluate.smk).


rule training_curve:
    input:
        MODEL,
    output:
        report(
            f"{RESULTS}/report/training_curve.png",
            caption="../report/training_curve.rst",
            category="Training",
            labels={"figure": "loss and validation Dice"},
        ),
    log:
        f"{LOGS}/training_curve.log",
    conda:
        ENV
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(15),
    shell:
        "unetseg figure training --history {input}/history.csv --output {output} 2> {log}"


rule data_table:
    input:
        get_preprocessed(samples_of("train", "val")),
        get_manifests(),
    output:
        report(
            f"{RESULTS}/report/data.html",
            caption="../report/data.rst",
            category="Data",
            labels={"table": "samples"},
        ),
    log:
        f"{LOGS}/data_table.log",
    conda:
        ENV
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(15),
    params:
        preprocessed=get_preprocessed(samples["sample"]),
        splits=samples["split"].tolist(),
    shell:
        "unetseg figure data --preprocessed {params.preprocessed} --splits {params.splits}"
        " --output {output} 2> {log}"


rule model_card:
    input:
        MODEL,
    output:
        report(
            f"{RESULTS}/report/model_card.html",
            caption="../report/model_card.rst",
            category="Provenance",
            labels={"page": "model card, config and versions"},
        ),
    log:
        f"{LOGS}/model_card.log",
    conda:
        ENV
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(15),
    shell:
        "unetseg figure card --model {input} --output {output} 2> {log}"
