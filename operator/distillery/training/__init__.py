"""Phase 2 as a library: fine-tune the student on the teacher's records.

`data` turns records into examples, `kd` is the logit-KD loss, `loop` the training loop,
`packing` its padding-free rows and their attention, `efficiency` what makes a step cheap on
the hardware (optimizer kernel, compile, checkpointing, the batch-size finder), `checkpoints`
its resumable state, `onpolicy` the student's own samples graded by the teacher, `student` the
whole stage for one job. The CLI is `stages.train`.
"""
