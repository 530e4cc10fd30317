"""The contract between the operator, `distillery run` and the stages.

`commands`: each stage's command line (built once, parsed by the stage), the `--job`
serialisation, the vLLM server arguments, ports and environment variable names.
`summaries`: what each stage reports when it ends, as typed models.
`series`: the names of the Prometheus series each stage process exports.

Everything that crosses a process boundary is defined here and nowhere else; the
manifests, the controller, the local runner and the stages all import it, and it
imports only the API models.
"""
