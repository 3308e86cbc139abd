"""Kafka, for every tool that talks to it: client configuration (``config``, the one owner of bootstrap
servers, TLS and SASL), topic creation (``admin``), sending events (``produce``), reading topics
(``reader``, ``tail``, ``replay``, ``partitioning``), consumer lag (``lag``), ACLs (``acls``), the broker
probe (``probe``) and the local broker (``local``).
"""
