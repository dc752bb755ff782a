# Segmenting the test and predict samples with the model: one job per batch of samples
# (inference.samples_per_job), each taking its images through preprocessing, tiled
# inference, the mask, instance labels, per-object measurements and the overlays in one
# process. Then the per-sample summary of the measurements.


rule segment:
    input:
        unpack(get_segment_input),
    output:
        manifest=f"{RESULTS}/segment/{{batch}}.tsv",
        overlays=report(
            directory(f"{RESULTS}/report/overlays/{{batch}}"),
            patterns=["{sample}.png"],
            caption="../report/overlay.rst",
            category="Segmentations",
            subcategory="Every image",
            labels={"sample": "{sample}"},
        ),
    log:
        f"{LOGS}/segment/{{batch}}.log",
    conda:
        ENV
    # Locally capped at --cores; on a cluster, the CPUs of the job.
    threads: 8
    resources:
        gpu=1,
        mem_mb=per_attempt(8000),
        runtime=per_attempt(60),
    params:
        samples=get_segment_samples,
        results=get_results_directory,
        options=get_segment_options(),
    shell:
        "unetseg segment --model {input.model} --samples {params.samples:q} --results {params.results}"
        " --manifest {output.manifest} --overlays {output.overlays} --threads {threads}"
        " {params.options} 2> {log}"


rule measurements_summary:
    input:
        get_manifests(),
    output:
        summary=report(
            f"{RESULTS}/measurements/summary.csv",
            caption="../report/measurements_summary.rst",
            category="Measurements",
            labels={"table": "objects per image (CSV)"},
        ),
        figure=report(
            f"{RESULTS}/report/measurements.png",
            caption="../report/measurements.rst",
            category="Measurements",
            labels={"figure": "counts, areas and intensities"},
        ),
    log:
        f"{LOGS}/measurements_summary.log",
    conda:
        ENV
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(15),
    params:
        measurements=get_measurement_tables(),
    shell:
        "unetseg summarize --manifests {input} --output {output.summary} --figure {output.figure}"
        " --measurements {params.measurements} 2> {log}"
