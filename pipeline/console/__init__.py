"""The analyst console: a review queue in the browser over live and replayed results, with verdicts.

- :mod:`.store`: the SQLite store and its numbered migrations; every write, idempotent
- :mod:`.ingest`: the Kafka consumer that follows the output topics into the store from stored offsets
- :mod:`.loader`: a backtest's output files (and report) loaded as a named run
- :mod:`.queries`, :mod:`.pages`, :mod:`.html`, :mod:`.charts`: what each page shows, and how
- :mod:`.auth`: the users file (scrypt), sessions and CSRF tokens
- :mod:`.publish`: signed verdicts to ``analyst-verdicts``
- :mod:`.web`: the aiohttp application; :mod:`.cli`: ``python -m pipeline console``

The console reads the contract's topics and files only; it imports nothing of the worker.
"""
