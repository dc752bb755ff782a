# Synthetic demo data: fluorescent nuclei with instance masks and their sample sheet.
# Runs only when config["samples"] points at the demo's sheet (DEMO_ROWS in common.smk);
# its outputs are the demo's own files, never images a config adds with `images`.

if DEMO_ROWS is not None:

    rule demo_data:
        output:
            sheet=str(DEMO_SHEET),
            images=DEMO_ROWS["image"].tolist(),
            masks=[m for m in DEMO_ROWS["mask"] if m],
        log:
            f"{LOGS}/demo_data.log",
        conda:
            ENV
        resources:
            mem_mb=per_attempt(2000),
            runtime=per_attempt(15),
        params:
            directory=get_output_directory,
            size=DEMO["size"],
            seed=DEMO["seed"],
            n_train=DEMO["n_train"],
            n_val=DEMO["n_val"],
            n_test=DEMO["n_test"],
            n_predict=DEMO["n_predict"],
            kind=DEMO["kind"],
        shell:
            "unetseg demo-data --output {params.directory} --size {params.size} --seed {params.seed}"
            " --n-train {params.n_train} --n-val {params.n_val} --n-test {params.n_test}"
            " --n-predict {params.n_predict} --kind {params.kind} 2> {log}"
