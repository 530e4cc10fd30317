"""The contract between the operator, `distillery run` and the stages.

`stages`: the stage table, the one list of stages and each one's facts.
`commands`: each stage's command line (built once, parsed by the stage), the `--job`
serialisation, the vLLM server arguments, ports and environment variable names.
`summaries`: what each stage reports when it ends, as typed models.
`cost`: what a job costs, the same arithmetic for the operator, `distillery run` and the report.
`exit_codes`: what each `distillery` process's exit status means (ExitCode), and when tracebacks show.
`series`: the names of the Prometheus series each stage process exports.

Everything that crosses a process boundary is defined here and nowhere else; the
manifests, the controller, the local runner and the stages all import it, and it
imports only the API models.
"""
