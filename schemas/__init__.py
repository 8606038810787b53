"""The contract of Embedding Studio: every event, command and stored record, the topic registry and
the settings. Depends on nothing else in the project; everything else depends on it."""
