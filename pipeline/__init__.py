"""Streaming detection of distillation attacks on a large-language-model API.

Usage events flow from Kafka through Faust agents into pure detection code (``pipeline.detection``);
findings leave as anomaly alerts and enforcement actions. See README.md for the commands.
"""

__version__ = "0.1.0"
