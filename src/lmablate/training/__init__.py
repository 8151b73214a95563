"""Training one run into its run directory: the loop (``loop.train``), the run files and
summary, checkpoints, evaluation metrics, several processes (torchrun) and experiment trackers."""
