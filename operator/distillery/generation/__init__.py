"""Phase 1 as a library: shard K of N of the prompts -> the teacher -> JSONL records.

`distillery.tasks.prompts` reads this shard's input records, `filters` decides which answers are kept,
`files` owns the shard's files and their recovery after a crash, `shard` runs it all.
The CLI is `stages.generate`.
"""
