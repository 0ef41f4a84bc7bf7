"""Everything on disk: checkpoints, loading a trained model, pretrained models, run folders, the lock, metrics.csv."""
