"""Virtual Market augment: the builder, exporters, the pipeline and the `vmarket` console script."""
