"""The Pollen reference server: round engine, strategies, durable state and gRPC service."""
