"""Flag groups that several commands share: Kafka connection, the local broker, and one flag per setting."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.settings import Settings


def detection_settings() -> frozenset[str]:
    """The settings that change what the detection decides (``DetectionConfig`` reads them)."""
    from dataclasses import fields

    from pipeline.detection.config import DetectionConfig

    return frozenset(f.name for f in fields(DetectionConfig)) & frozenset(Settings.model_fields)


def add_settings_flags(p: argparse.ArgumentParser, only: frozenset[str] | None = None) -> None:
    """A ``--name VALUE`` flag for every setting the parser does not have yet, or for those in ``only`` (a
    command shows the settings it uses, not the worker's ports and stores); secrets excepted: they come
    from the environment only, never from a command line that other users can see."""
    from pydantic import SecretStr

    g = p.add_argument_group("settings (each flag overrides the DG_<NAME> environment variable)")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if (flag in p._option_string_actions or field.annotation in (SecretStr, SecretStr | None)
                or (only is not None and name not in only)):
            continue
        default = field.default if field.default_factory is None else "per user"
        g.add_argument(flag, dest=name, metavar="V",
                       help=f"{field.description or name} (env DG_{name.upper()}; default {default})")


def add_kafka_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Kafka")
    g.add_argument("--bootstrap", metavar="HOST:PORT[,…]",
                   help="Kafka bootstrap servers (env DG_BOOTSTRAP; default 127.0.0.1:9092, the local broker)")
    g.add_argument("--topic-prefix", metavar="P", help="prefix in front of every topic name (env DG_TOPIC_PREFIX)")


def add_local_kafka_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("local broker")
    g.add_argument("--data-dir", dest="kafka_data_dir", type=Path, metavar="DIR",
                   help="broker data and log directory (env DG_KAFKA_DATA_DIR; default ./.kafka)")
    g.add_argument("--port", dest="kafka_port", type=int, metavar="N",
                   help="client listener port on 127.0.0.1 (env DG_KAFKA_PORT; default 9092)")
    g.add_argument("--controller-port", dest="kafka_controller_port", type=int, metavar="N",
                   help="KRaft controller port on 127.0.0.1 (env DG_KAFKA_CONTROLLER_PORT; default 9093)")
    g.add_argument("--sasl", dest="kafka_sasl", action="store_const", const=True,
                   help="SASL/SCRAM-SHA-512 logins and per-role ACLs (pipeline/kafka/acls.py); each role's login "
                        "goes to DIR/sasl/<role>.env (env DG_KAFKA_SASL; fixed when DIR is first formatted)")
