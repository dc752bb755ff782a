# unetseg: U-Net segmentation of microscopy images.
#
#   snakemake --cores 8 --resources gpu=1 [--configfile my_config.yaml]
#
# Stages, one file each under workflow/rules/: demo data, preprocess, tile, train,
# segment (test and predict images in batches: preprocess, infer, mask, instances,
# measurements), evaluate, report. All logic lives in the unetseg package (src/unetseg).

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/plan.smk"
include: "workflow/rules/tile.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/export.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
