"""A plain asyncua server standing for a PLC's OPC UA server, on 127.0.0.1, in a thread of its own: for the OPC UA
client sink and the OPC UA trigger tests."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole

from edgevision.line.sinks.opcua import _cancel_all
from tests.line.conftest import free_port, make_opcua_cert

T = 20.0  # seconds: bound of every wait (generous: the machine may be busy)
V = ua.VariantType
PLC_VARS: tuple[tuple[str, ua.VariantType, Any], ...] = (
    ("Decision", V.String, ""), ("PartId", V.String, ""), ("DefectCount", V.Int32, 0), ("InferenceMs", V.Double, 0.0),
    ("Sequence", V.Int64, 0), ("Heartbeat", V.UInt32, 0), ("Healthy", V.Boolean, False), ("Status", V.String, ""),
    ("TrigPart", V.String, "P0"), ("TrigSerial", V.String, ""), ("TrigNumber", V.Int32, 0))


class PlcUsers:
    """The PLC's user manager: anonymous sessions, and user ``plc`` with password ``s3cret``; records who got in
    (asyncua passes the client's certificate on a secured channel, ``b""`` on an unsecured one)."""

    def __init__(self) -> None:
        self.accepted: list[tuple[str, bool]] = []
        """(user, whether the channel was secured) of each session let in."""

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> Any:
        if username is None:
            return User(role=UserRole.User, name="anonymous")
        if (username, password) == ("plc", "s3cret"):
            self.accepted.append((username, bool(certificate)))
            return User(role=UserRole.User, name=username)
        return None


class Plc:
    """A plain asyncua server in a thread of its own: namespace ``urn:test:plc``, writable variables ``Line1.<Name>``
    of `PLC_VARS`, endpoints with no security and with Basic256Sha256 SignAndEncrypt. `stop_listening` / `listen`
    take its port down and up again (the address space and its values stay)."""

    def __init__(self, folder: Path, fields: dict[str, str] | None = None) -> None:
        self.fields = fields or {}
        """Variable name -> the EdgeVision field it stands for (`nodes`)."""
        self.url = f"opc.tcp://127.0.0.1:{free_port()}/plc/"
        self.users = PlcUsers()
        self.cert, self.key = make_opcua_cert(folder, "plc", "urn:test:plc:server")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="test-plc", daemon=True)
        self.thread.start()
        self.vars: dict[str, Any] = {}
        self.server: Any = None
        self.idx = self.call(self._init(), 90)
        self.listening = False
        self.listen()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        _cancel_all(self.loop)
        self.loop.close()

    def call(self, coro: Any, timeout: float = T) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _init(self) -> int:
        server = Server(user_manager=self.users)  # type: ignore[arg-type]
        await server.init()
        server.set_endpoint(self.url)
        await server.set_application_uri("urn:test:plc:server")
        await server.load_certificate(str(self.cert))
        await server.load_private_key(str(self.key))
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity,
                                    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        idx = await server.register_namespace("urn:test:plc")
        folder = await server.nodes.objects.add_folder(ua.NodeId(ua.String("Line1"), ua.Int16(idx)), "Line1")
        for name, vtype, initial in PLC_VARS:
            var = await folder.add_variable(ua.NodeId(ua.String(f"Line1.{name}"), ua.Int16(idx)), name, ua.Variant(initial, vtype))
            await var.set_writable()
            self.vars[name] = var
        self.server = server
        return int(idx)

    def node(self, name: str) -> str:
        return f"ns={self.idx};s=Line1.{name}"

    def nodes(self, *names: str) -> dict[str, str]:
        return {self.fields[n]: self.node(n) for n in (names or self.fields)}

    def value(self, name: str) -> ua.Variant:
        return self.call(self.vars[name].read_data_value()).Value

    def write(self, name: str, value: Any, *, stamp: bool = True) -> None:
        """The PLC program sets a variable (server side), with a source timestamp of now unless ``stamp`` is False."""
        vtype = next(v for n, v, _ in PLC_VARS if n == name)
        dv = ua.DataValue(ua.Variant(value, vtype))
        if stamp:
            dv.SourceTimestamp = datetime.now(timezone.utc)
        self.call(self.vars[name].write_value(dv))

    def listen(self) -> None:
        if not self.listening:
            self.call(self.server.start())
            self.listening = True

    def stop_listening(self) -> None:
        if self.listening:
            self.call(self.server.stop())
            self.listening = False

    def close(self) -> None:
        self.stop_listening()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(T)


