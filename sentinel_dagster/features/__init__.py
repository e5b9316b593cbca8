"""Stage 3: offline features, the event log replayed through serving's engine; their
sanity checks and importance."""
