# Train the U-Net; writes the model directory (weights + card + history.csv).


rule train:
    input:
        patches=f"{RESULTS}/tiles/patches.zarr",
        val=get_preprocessed(samples_of("val")),
        init_from=get_init_from(),
        plan=f"{RESULTS}/plan.json",
    output:
        directory(f"{RESULTS}/model"),
    log:
        f"{LOGS}/train.log",
    conda:
        ENV
    # Locally capped at --cores; on a cluster, the CPUs of the job.
    threads: 8
    resources:
        gpu=1,
        mem_mb=per_attempt(16000),
        runtime=get_train_runtime,
    params:
        model=as_json(config["model"]),
        train=as_json(config["train"]),
        card=MODEL_CARD,
        # Outside the model directory, so that Snakemake keeps it when a killed job reruns.
        checkpoint=f"{RESULTS}/train_state/checkpoint.pt",
        workflow_dir=WORKFLOW_DIR,
    shell:
        "OMP_NUM_THREADS={threads} unetseg train --patches {input.patches} --val-images {input.val}"
        " --output {output}"
        " --model-settings {params.model:q} --train-settings {params.train:q}"
        " --card {params.card:q} --plan {input.plan} --checkpoint {params.checkpoint} --workflow-dir {params.workflow_dir}"
        " 2> {log}"
