# Train the U-Net; writes the model directory (weights + card + history.csv).


rule train:
    input:
        f"{RESULTS}/tiles/patches.zarr",
    output:
        directory(f"{RESULTS}/model"),
    params:
        model=as_json(config["model"]),
        train=as_json(config["train"]),
        card=MODEL_CARD,
    resources:
        gpu=1,
    threads: workflow.cores
    log:
        f"{LOGS}/train.log",
    shell:
        "OMP_NUM_THREADS={threads} unetseg train --patches {input} --output {output}"
        " --model-settings {params.model:q} --train-settings {params.train:q}"
        " --card {params.card:q} 2> {log}"
