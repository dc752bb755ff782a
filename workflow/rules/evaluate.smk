# Scores of every test image (pixels, boundaries, regions, objects), their statistics over
# the split, and the report's metric figures and tables.


rule evaluate:
    input:
        model=MODEL,
        manifests=get_manifests(["test"]),
    output:
        json=f"{RESULTS}/evaluation/summary.json",
        csv=report(
            f"{RESULTS}/evaluation/per_image.csv",
            caption="../report/per_image.rst",
            category="Metrics",
            subcategory="Tables",
            labels={"table": "per-image scores (CSV)"},
        ),
        table=f"{RESULTS}/evaluation/metrics.csv",
        page=report(
            f"{RESULTS}/report/metrics.html",
            caption="../report/metrics_page.rst",
            category="Metrics",
            subcategory="Tables",
            labels={"table": "statistics over the test split"},
        ),
        distributions=report(
            f"{RESULTS}/report/metric_distributions.png",
            caption="../report/metric_distributions.rst",
            category="Metrics",
            subcategory="Figures",
            labels={"figure": "per-image score distributions"},
        ),
        instances=report(
            f"{RESULTS}/report/instance_curves.png",
            caption="../report/instance_curves.rst",
            category="Metrics",
            subcategory="Figures",
            labels={"figure": "objects against IoU threshold"},
        ),
        confusion=report(
            f"{RESULTS}/report/confusion.png",
            caption="../report/confusion.rst",
            category="Metrics",
            subcategory="Figures",
            labels={"figure": "pixel confusion matrix"},
        ),
        gallery=report(
            f"{RESULTS}/report/worst_samples.png",
            caption="../report/worst_samples.rst",
            category="Segmentations",
            subcategory="Worst by Dice",
            labels={"sample": "worst test images"},
        ),
    log:
        f"{LOGS}/evaluate.log",
    conda:
        ENV
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(30),
    params:
        samples=samples_of("test"),
        truth=get_preprocessed(samples_of("test")),
        prediction=expand(f"{RESULTS}/masks/{{sample}}.tif", sample=samples_of("test")),
        instances=get_pred_instances_arg,
        foreground=as_json(config["labels"]["foreground"]),
        sheet=config["samples"],
        workflow_dir=WORKFLOW_DIR,
    shell:
        "unetseg evaluate --samples {params.samples} --truth {params.truth}"
        " --prediction {params.prediction} {params.instances} --foreground {params.foreground:q}"
        " --json {output.json} --csv {output.csv} --metrics-table {output.table}"
        " --metrics-page {output.page} --distributions {output.distributions}"
        " --instances {output.instances} --confusion {output.confusion} --gallery {output.gallery}"
        " --model {input.model}"
        " --manifests {input.manifests} --sample-sheet {params.sheet} --workflow-dir {params.workflow_dir} 2> {log}"
