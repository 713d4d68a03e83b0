"""Experiment jobs: long, resumable runs that call the makers, the generator's training and re-ID, and report.

- ``pipeline``: the whole pipeline on SimMarket with ``report.md`` (`make demo`).
- ``reference``: the reference generator training (`make reference`).
- ``reference_reid``: the reference re-ID ablation, recipes x regimes x seeds (`make reference-reid`).
- ``provenance``: what every job records about the code and the command that made its outputs.
"""
