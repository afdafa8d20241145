"""A simulated TiKV fleet that plays the TiKV side of the PD protocol over real gRPC.

It is the demo, the scenario test bed and a load generator: stores register, heartbeat,
hold regions with sizes and key ranges, and execute every command PD sends with
realistic costs, on a clock that runs faster than wall time.
"""
