"""Scoring as a library: every compared model answers the validation prompts; the report and the gate.

`answers` gets each model's answers (served, live, or from generation records), `measure`
serves and asks every compared model the same way (the report's latency and throughput), `scoring`
computes the metrics, `report` and `lineage` write what a person and a registry read,
`evaluate` ties them together for one job. The CLI is `stages.evaluate`.
"""
