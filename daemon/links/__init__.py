"""The daemon's links to the world outside its process: the MQTT connection, the
time-series database, and the local store that makes both durable."""
