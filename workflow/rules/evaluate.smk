# Dice, IoU, precision, recall and pixel error of every test image, and their means.


rule evaluate:
    input:
        truth=get_preprocessed(samples_of("test")),
        prediction=expand(f"{RESULTS}/masks/{{sample}}.tif", sample=samples_of("test")),
    output:
        json=f"{RESULTS}/evaluation/summary.json",
        csv=report(
            f"{RESULTS}/evaluation/per_image.csv",
            caption="../report/per_image.rst",
            category="Metrics",
        ),
    params:
        samples=samples_of("test"),
    log:
        f"{LOGS}/evaluate.log",
    shell:
        "unetseg evaluate --samples {params.samples} --truth {input.truth}"
        " --prediction {input.prediction} --json {output.json} --csv {output.csv} 2> {log}"
