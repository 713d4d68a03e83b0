"""Virtual Market reid: the torchreid adapter, evaluation and the ablation runner."""
