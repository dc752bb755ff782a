# Training and validation patches in one Zarr store, chunked by patch.


rule tile:
    input:
        train=get_preprocessed(samples_of("train")),
        val=get_preprocessed(samples_of("val")),
        plan=f"{RESULTS}/plan/data.json",
    output:
        directory(f"{RESULTS}/tiles/patches.zarr"),
    log:
        f"{LOGS}/tile.log",
    conda:
        ENV
    resources:
        mem_mb=per_attempt(8000),
        runtime=per_attempt(30),
    params:
        patch_size=config["tile"]["patch_size"],
        weight_map=get_weight_map_args(),
        # What places the patches (the margin of valid padding): a new width, batch norm or
        # dropout trains again on the same patches.
        model=as_json({key: config["model"][key] for key in ("depth", "padding")}),
        # Which samples are train and which val: swapping them changes no input file.
        splits=as_json({"train": samples_of("train"), "val": samples_of("val")}),
    shell:
        "unetseg tile --train {input.train} --val {input.val} --output {output}"
        " --patch-size {params.patch_size} --model-settings {params.model:q} {params.weight_map}"
        " --plan {input.plan} 2> {log}"
