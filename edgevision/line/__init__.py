"""``edgevision line``: EdgeVision on the production line (issue 20).

A room of its own above the runtime: sources (hot folder, video stream) feed the torch-free
`edgevision.runtime.Detector`; every part becomes a row of the inspection record (`edgevision.line.record`)
before its decision is published to the sinks (OPC UA server, Modbus TCP PLC, MQTT with a durable queue).
It imports nothing from training, export or quantization, and runs on the runtime-only install plus the
``line`` extra.
"""
