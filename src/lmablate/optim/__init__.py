"""Optimization: which parameters the optimizer updates and how (``optimizers``), and the
learning rate as a pure function of the step (``schedules``)."""
