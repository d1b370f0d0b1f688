"""Internal RPC: long-lived channels, batching pipes with task-pool flow control (DESIGN.md §5).

This package is the only place that imports grpc, apart from the generated code and the
servicers' registration in each service's app module.
"""
