# The model as a bioimage.io package (spec 0.5) for Fiji, ilastik and QuPath users: with
# export: true in the config.


rule export:
    input:
        model=MODEL,
        sample=get_export_sample(),
    output:
        f"{RESULTS}/export/{config['dataset']}.bioimageio.zip",
    log:
        f"{LOGS}/export.log",
    conda:
        ENV
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(30),
    params:
        url=config["export_software_url"],
        axes=config["data"]["axes"],
    shell:
        "unetseg export --model {input.model} --output {output} --sample-image {input.sample}"
        " --axes {params.axes} --software-url {params.url:q} 2> {log}"
