"""The name the spec gives the consumer: ``ai_services.ai_consumers.AIConsumer``."""

from ai_services.consumers import AIConsumer

__all__ = ["AIConsumer"]
