"""Stage 2: the event log on disk, its daily statistics, its Great Expectations suite and
the Data Docs that show it."""
