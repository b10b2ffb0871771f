"""Studies: grids of runs over seeds and settings with their probes, tables and curves, and the
reproduction suite that turns them into verdicts."""
