"""One-off measurements behind the figures in docs/results.md, each a script anyone can rerun
(`python -m edgecxr.benchmarks.measure.NAME --help`), its results committed under
benchmarks/results/ with command, machine and date. Not part of the `bench` command.

Result files written before 2026-12-03 name these scripts by their earlier paths
(`edgecxr.benchmarks.NAME`); the scripts moved here unchanged.
"""
