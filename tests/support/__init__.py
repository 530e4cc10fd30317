"""What the test tiers share: waiting (`wait_for`), the emulated cluster (`start_cluster`, the
`make_cluster` fixture), the tiny job and its probes, the chart, and the kill-and-recover scenario.

Test modules import from here (and from tests/harness), never from one another.
"""
