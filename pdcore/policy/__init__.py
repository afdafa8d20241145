"""Wasm scheduling policy ABI: pure encoders and decoders."""
