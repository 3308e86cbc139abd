"""The contract: what users build against, and nothing that runs.

Wire messages (``models``), their codec and JSON Schemas (``codec``, ``schemas``), the topic manifest and
topic names (``manifest``), signatures of actions and verdicts (``signing``, ``verdicts``, ``verify``),
event files (``eventfile``), what is admitted (``admission``), privacy rules (``privacy``) and the prompt
SimHash (``simhash``, ``prompt_simhash``). It imports nothing else of ``pipeline``.
"""
