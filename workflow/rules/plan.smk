# Plan the settings left at auto, in two stages so that a change of a training setting does
# not cut new patches: from the training data, what tiling needs (patch size, depth, weight
# map); then, from a short measurement of this machine, the rest (channels, batch, epochs).


rule plan_data:
    input:
        train=get_preprocessed(samples_of("train")),
        val=get_preprocessed(samples_of("val")),
    output:
        f"{RESULTS}/plan/data.json",
    log:
        f"{LOGS}/plan_data.log",
    conda:
        ENV
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(15),
    params:
        settings=as_json(get_plan_settings("data")),
    shell:
        "unetseg plan --stage data --train {input.train} --val {input.val}"
        " --settings {params.settings:q} --output {output} 2> {log}"


rule plan:
    input:
        f"{RESULTS}/plan/data.json",
    output:
        f"{RESULTS}/plan.json",
    log:
        f"{LOGS}/plan.log",
    conda:
        ENV
    # Measures a training step on the device that will train.
    threads: 8
    resources:
        gpu=1,
        mem_mb=per_attempt(4000),
        runtime=per_attempt(15),
    params:
        settings=as_json(get_plan_settings("training")),
    shell:
        "OMP_NUM_THREADS={threads} unetseg plan --stage training --data-plan {input}"
        " --settings {params.settings:q} --output {output} 2> {log}"
