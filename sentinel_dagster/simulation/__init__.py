"""Stage 1: the labelled event stream (the simulator and its world, behaviours, fraud scenarios)."""
