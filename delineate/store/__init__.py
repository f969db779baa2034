"""The job store: the only package that knows Redis key and channel names.

Progress is stored state first and an event second: every write goes to the job's hash
through one Lua script (atomically, refusing to touch a terminal job), then a status
snapshot is published on the job's channel.

- :mod:`delineate.store.keys`: every key and channel name (the key table)
- :mod:`delineate.store.jobstore`: :class:`JobStore`, its writes, events and leases
- :mod:`delineate.store.history`, :mod:`delineate.store.sweep_index`: its history and
  sweeper reads
- :mod:`delineate.store.scripts` and ``lua/*.lua``: the Lua scripts, one file each
"""

from delineate.store.jobstore import JobGone, JobStore, LeaseLost, Replay, TooManyActive, Written

__all__ = ["JobGone", "JobStore", "LeaseLost", "Replay", "TooManyActive", "Written"]
