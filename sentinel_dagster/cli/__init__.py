"""The entry points: the `sentinel` command line (`main`), in-process runs, `sentinel up`
and `sentinel demo`."""
