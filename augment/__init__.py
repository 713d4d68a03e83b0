"""Virtual Market augment, above `generator` and `reid`.

- ``augment.makers``: the dataset makers (the Virtual Market builder, cut-and-paste and its hybrids, exports).
- ``augment.jobs``: the experiment jobs (the demo pipeline and its report, the reference trainings, the reference
  re-ID ablation) and their shared provenance.
- ``augment.cli``: the `vmarket` console script on top of both.
"""
