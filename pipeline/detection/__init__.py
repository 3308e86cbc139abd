"""Pure detection: events in, findings out. No Faust, Kafka, asyncio, I/O or clock in this package."""

from pipeline.detection.config import DetectionConfig
from pipeline.detection.engine import Engine, Output

__all__ = ["DetectionConfig", "Engine", "Output"]
