"""The wasmtime host for scheduling policies."""
