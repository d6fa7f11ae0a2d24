"""Safe roll-outs: which version answers a prediction, and the evidence that
decides whether a canary keeps its traffic."""
