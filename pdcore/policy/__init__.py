"""Scheduling policies in WebAssembly: the versioned data ABI (pure encoders and
decoders) and the host-side validation of what a policy proposes."""
