"""Serving models with vLLM and talking to them: the launcher (`vllm`) and the OpenAI client (`client`).

Used for the teacher by `distillery run`, and for the baseline and the student by evaluation.
"""
