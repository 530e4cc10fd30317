"""Phase 2 as a library: fine-tune the student on the teacher's records.

`data` turns records into examples, `kd` is the logit-KD loss, `loop` the training loop,
`checkpoints` its resumable state, `student` the whole stage for one job. The CLI is
`stages.train`.
"""
