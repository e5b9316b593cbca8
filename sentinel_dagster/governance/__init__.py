"""Stage 5: the promotion gate, the published bundles and the champion pointer."""
