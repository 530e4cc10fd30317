"""Phase 0 as a library: are the job's inputs there and readable, before any GPU is held?

`inputs` opens every input the spec names and parses its first records. The CLI is `stages.check`;
`distillery run` calls the same check.
"""
