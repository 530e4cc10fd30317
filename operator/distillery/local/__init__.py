"""`distillery run`: the stages chained on one machine, with no cluster.

runner   the job: check, teacher, generation, training, evaluation, resumed where a run stopped
process  the stages' subprocesses: the pods' command lines, their summaries, Ctrl-C passed on
cost     what a run spent before evaluation (the teacher's served time, the stages' summaries)
"""
