"""netledger.ops: what running netledger takes, below the command line that wires it — the
status of every component (``status``), the storage watcher of ``serve`` (``storage``), NATS
credentials per role (``auth``), the configuration file (``config``), finding the projection
of a running ``serve`` (``locate``), logging setup (``logs``) and durations (``duration``).

It may import events, journal, common and projector (errors only); no part imports it: the
root (netledger/) uses it to wire commands and ``serve``.
"""
