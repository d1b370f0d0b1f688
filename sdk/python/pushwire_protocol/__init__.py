"""The client protocol of pushwire (docs/protocol.md), shared by the server and the SDKs:
the packet codec (wire.py), the error codes (errors.py) and the wire messages (pb/, generated
from proto/pushwire/wire.proto by scripts/genproto.py)."""
