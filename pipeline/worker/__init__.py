"""The streaming worker: the Faust application (``app``) and what it runs on, the consumer, the invalid-input
guard, stall diagnosis and Prometheus metrics. Detection itself is :mod:`pipeline.detection`.
"""
