"""Decision sinks: OPC UA (server), Modbus TCP (client), MQTT (client, durable queue). See `base`."""
