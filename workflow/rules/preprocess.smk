# Check each sample, normalise intensities, map masks to foreground, store as Zarr.


rule preprocess:
    input:
        unpack(get_preprocess_input),
    output:
        directory(f"{RESULTS}/preprocessed/{{sample}}.zarr"),
    log:
        f"{LOGS}/preprocess/{{sample}}.log",
    conda:
        ENV
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(30),
    params:
        mask=get_mask_arg,
        foreground=as_json(config["labels"]["foreground"]),
        classes=as_json(config["labels"]["classes"]),
        percentiles=config["preprocess"]["percentiles"],
        axes=config["data"]["axes"],
        separate=get_separation_arg(),
    shell:
        "unetseg preprocess --sample {wildcards.sample} --image {input.image} {params.mask}"
        " --output {output} --foreground {params.foreground:q} --classes {params.classes:q}"
        " --axes {params.axes}"
        " --percentiles {params.percentiles} {params.separate} 2> {log}"
