# Figures for `snakemake --report`: overlays of every segmented image, the training curve.


rule overlay:
    input:
        image=f"{RESULTS}/preprocessed/{{sample}}.zarr",
        mask=f"{RESULTS}/masks/{{sample}}.tif",
    output:
        report(
            f"{RESULTS}/report/overlays/{{sample}}.png",
            caption="../report/overlay.rst",
            category="Segmentations",
            labels={"sample": "{sample}"},
        ),
    log:
        f"{LOGS}/overlay/{{sample}}.log",
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
        ),
    log:
        f"{LOGS}/training_curve.log",
    shell:
        "unetseg figure training --history {input}/history.csv --output {output} 2> {log}"
