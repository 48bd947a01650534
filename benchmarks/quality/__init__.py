"""The quality benchmark: recipes trained on the competition images, scored by FID as they train.

    .venv/bin/python -m benchmarks.quality train --minutes 60            # here, with the FID network
    python3 -m benchmarks.quality record --minutes 8 --out $OUT/recorded # a GPU machine without one
    .venv/bin/python -m benchmarks.quality score DIR                     # here: what `record` kept
    .venv/bin/python -m benchmarks.quality report                        # the table and curve.png

Modules: `recipes.json` (the recipes, as config changes with the reason for each), `runs`
(training and evaluating one recipe, recording it, scoring a recording), `metrics` (what the
runs measure besides FID), `report` (the table and the figures). Each run is planned by the
trainer's own time plan (`--minutes`) or given `--epochs`, evaluated every `--eval-steps` steps
by the trainer (`eval_steps`), and kept as out/<run>/evaluations.json; a re-run skips what is done.
"""
