"""Thin command-line entry points of the stages: `distillery generate | train | evaluate`.

Each module parses its command (`contract.commands`), runs the stage's library
(`generation`, `training`, `evaluation`) and reports the typed summary
(`contract.summaries`) through `stages.common.run_stage`.
"""
