"""Planning a training run from the data and the machine (the workflow's ``plan`` rule).

A biologist with a new dataset writes a sample sheet, not a hyper-parameter search: as in
nnU-Net, a fingerprint of the training data (:mod:`.fingerprint`) and of the compute (a
short measured throughput) give, by a few documented rules (:mod:`.rules`), the settings
left at ``auto`` in the config: patch size, depth, base channels, batch size, epochs, the
border weight map, foreground sampling and whether training steps are compiled. Explicit
config values always win. The plan is written once to ``results/{dataset}/plan.json`` and
read by tile and train, so a rerun reuses it.
"""
