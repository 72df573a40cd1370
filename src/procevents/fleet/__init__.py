"""Many hosts, one store: shipping a recording to NATS JetStream and
collecting it elsewhere.

The recorder's own SQLite file is the outbox.  :mod:`.outbox` reads what a
stream has not acknowledged yet (events by id, lifetimes by revision,
sessions) and moves the cursor once it has; :mod:`.messages` is the pure
codec of those rows; :mod:`.shipper` is the process ``record --nats``
starts, which publishes and never makes the recorder wait; :mod:`.collector`
is ``procevents collect``: a durable consumer that writes every host's rows
into one store and acknowledges only what is committed.

Only :mod:`.shipper`, :mod:`.collector` and :mod:`.connect` import nats-py
(the ``fleet`` extra), and only when they run.
"""

#: Defaults, here so that ``record --help`` imports nothing else.
DEFAULT_STREAM = "PROCEVENTS"
DEFAULT_PREFIX = "procevents"
#: Environment variable the URL may come from (an EnvironmentFile keeps a
#: password out of every command line).
URL_ENV = "PROCEVENTS_NATS_URL"
#: The collector's durable consumer.
DEFAULT_DURABLE = "procevents-collect"
