"""Embedded services for one machine: a Kafka-compatible broker (tansu), an MLflow server, and the
runtime that starts the parts a configuration leaves unset."""
