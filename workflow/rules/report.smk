# Figures and pages for `snakemake --report`: overlays and error maps of every segmented
# image, the training curve, the data table and the model card. The metric figures come
# from the evaluate rule (evaluate.smk).


rule overlay:
    input:
        image=f"{RESULTS}/preprocessed/{{sample}}.zarr",
        mask=f"{RESULTS}/masks/{{sample}}.tif",
    output:
        report(
            f"{RESULTS}/report/overlays/{{sample}}.png",
            caption="../report/overlay.rst",
            category="Segmentations",
            subcategory="Every image",
            labels={"sample": "{sample}"},
        ),
    log:
        f"{LOGS}/overlay/{{sample}}.log",
    conda:
        ENV
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(15),
    shell:
        "unetseg figure overlay --preprocessed {input.image} --prediction {input.mask}"
        " --output {output} 2> {log}"


rule training_curve:
    input:
        f"{RESULTS}/model",
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
        get_preprocessed(samples["sample"]),
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
        splits=samples["split"].tolist(),
    shell:
        "unetseg figure data --preprocessed {input} --splits {params.splits}"
        " --output {output} 2> {log}"


rule model_card:
    input:
        f"{RESULTS}/model",
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
