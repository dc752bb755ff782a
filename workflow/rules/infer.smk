# Dask-parallel tiled inference into a full-size probability map, then the final mask.


rule infer:
    input:
        model=f"{RESULTS}/model",
        image=f"{RESULTS}/preprocessed/{{sample}}.zarr",
    output:
        temp(directory(f"{RESULTS}/probabilities/{{sample}}.zarr")),
    log:
        f"{LOGS}/infer/{{sample}}.log",
    conda:
        ENV
    # Locally capped at --cores; on a cluster, the CPUs of the job.
    threads: 8
    resources:
        gpu=1,
        mem_mb=per_attempt(8000),
        runtime=per_attempt(60),
    params:
        tile=config["inference"]["tile"],
        batch_size=config["inference"]["batch_size"],
        border=config["inference"]["border"],
        device=config["inference"]["device"],
        scheduler=config["inference"]["dask_scheduler"],
        tta="--tta" if config["inference"]["tta"] else "",
        blend=config["inference"]["blend"],
        overlap=config["inference"]["overlap"],
        skip_empty="--skip-empty" if config["inference"]["skip_empty"] else "",
        amp="--amp" if config["inference"]["amp"] else "",
    shell:
        "unetseg infer --model {input.model} --input {input.image} --output {output}"
        " --tile {params.tile} --batch-size {params.batch_size} --border {params.border}"
        " --device {params.device} --threads {threads} --dask-scheduler {params.scheduler} {params.tta}"
        " --blend {params.blend} --overlap {params.overlap} {params.skip_empty} {params.amp} 2> {log}"


rule stitch:
    input:
        model=f"{RESULTS}/model",
        probabilities=f"{RESULTS}/probabilities/{{sample}}.zarr",
    output:
        f"{RESULTS}/masks/{{sample}}.tif",
    log:
        f"{LOGS}/stitch/{{sample}}.log",
    conda:
        ENV
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(30),
    shell:
        "unetseg stitch --model {input.model} --probabilities {input.probabilities}"
        " --output {output} 2> {log}"


rule instances:
    input:
        f"{RESULTS}/masks/{{sample}}.tif",
    output:
        f"{RESULTS}/instances/{{sample}}.tif",
    log:
        f"{LOGS}/instances/{{sample}}.log",
    conda:
        ENV
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(30),
    shell:
        "unetseg instances --mask {input} --output {output} 2> {log}"


rule ome_zarr:
    input:
        unpack(get_ome_zarr_input),
    output:
        directory(f"{RESULTS}/ome-zarr/{{sample}}.ome.zarr"),
    log:
        f"{LOGS}/ome_zarr/{{sample}}.log",
    conda:
        ENV
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(30),
    params:
        dtype=config["inference"]["probabilities_dtype"],
        instances=lambda wildcards, input: (
            f"--instances {input.instances}" if "instances" in input.keys() else ""
        ),
    shell:
        "unetseg ome-zarr --probabilities {input.probabilities} --mask {input.mask} {params.instances}"
        " --dtype {params.dtype} --output {output} 2> {log}"
