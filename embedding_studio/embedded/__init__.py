"""Embedded services for one machine, and the runtime that starts the parts a configuration leaves
unset: a Kafka-compatible broker (``broker``, tansu), an MLflow server and a Milvus Lite server
(``mlflow_server``, ``milvus_server``, one life cycle in ``local_server``), the whole system in one
process tree (``runtime``, ``system``) and a driver that pushes sessions through it from the outside,
as a search product and an operator would (``pipeline``: the demo and the quality bench use it)."""
