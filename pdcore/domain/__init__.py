"""The pure PD domain: plain values and rules, no I/O and no clocks of its own."""
