"""Pure scheduling: operators, the operator controller, checkers and schedulers.

Nothing here does I/O or reads a clock: time arrives as `now` (seconds of the
scheduling clock) and decisions leave as data — operators with a reason, commands for a
store's heartbeat stream, and diagnoses of why nothing was scheduled.
"""
