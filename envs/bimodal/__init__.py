"""A synthetic bimodal task: does a policy keep both modes of its demonstrations? Data and mode metric."""
