"""The training loop: the jitted steps, the train state, the optimizer and the run lengths."""
